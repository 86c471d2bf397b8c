"""The pipeline on a small model that is not YOLOP (any model meeting the contract exports):
engine stage through the fake TensorRT (built, then run by the runtime), lint failure, FP16 threshold failure. Fast: 64x64."""

from __future__ import annotations

import json
import sys

import pytest
from conftest import small_config
from cuda_memory_fake import install_fake_tensorrt
from tensorrt_fake import make_fake_tensorrt
from tiny_model import TinyMultiTask

from export import Fp16Thresholds, export_model
from export.errors import EngineBuildError, Fp16Error, LintError
from runtime.fileio import file_sha256
from runtime.sidecar import read_sidecar


def _cfg(out, tensorrt: dict | None = None, half: dict | None = None):
    return small_config(
        out,
        input={"imgsz": (64, 64)},
        output={"name": "tiny"},
        checks={"fp16": Fp16Thresholds()},
        tensorrt=tensorrt or {},
        half=half or {},
    )


def test_engine_with_fake_trt11_writes_engine_and_sidecar(monkeypatch, tmp_path):
    out = tmp_path / "out"
    trt = install_fake_tensorrt(monkeypatch, "11.1.0.106").trt  # the engine check runs it
    result = export_model(TinyMultiTask(), _cfg(out))
    engine = out / "tiny_fp16.engine"
    assert result.artifact("engine") == engine and json.loads(engine.read_bytes())["fake"]
    sc = read_sidecar(engine)
    assert (sc.format, sc.precision, sc.sha256) == ("engine", "fp16", file_sha256(engine))
    assert sc.source_onnx_sha256 == file_sha256(out / "tiny_fp16.onnx")
    assert (
        sc.tensorrt.version == "11.1.0.106" and sc.tensorrt.fp16_path == "strongly_typed_fp16_onnx"
    )
    assert "STRONGLY_TYPED" in sc.tensorrt.build_flags and sc.tensorrt.gpu
    assert (sc.batch.min, sc.batch.opt, sc.batch.max) == (1, 1, 2)
    assert sc.det.anchors == () and sc.model.name == "tiny-multitask"
    s = result.summary
    assert s["trt_target"] == "11" and s["engine"]["status"] == "built"
    assert (
        "--onnx=tiny_fp16.onnx" in s["engine"]["trtexec"]
        and "--stronglyTyped" in s["engine"]["trtexec"]
    )
    assert "--fp16" not in s["engine"]["trtexec"].split()
    assert s["engine"]["parity_vs_onnx_fp32"]["ok"]
    assert s["fp16"]["emulated"]["ok"] and s["fp16"]["onnxruntime"]["ok"]  # default thresholds
    assert [k for k, _ in trt.calls].count("build_serialized_network") == 1
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_parse_failure_keeps_verified_onnx_and_writes_no_engine(monkeypatch, tmp_path):
    out = tmp_path / "out"
    errors = (("UNSUPPORTED_NODE", "No importer registered for op: Foo", "foo", "Foo"),)
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_tensorrt(parse_errors=errors))
    with pytest.raises(EngineBuildError, match="UNSUPPORTED_NODE: No importer registered"):
        export_model(TinyMultiTask(), _cfg(out))
    names = {p.name for p in out.iterdir()}
    assert "tiny.onnx" in names and not any(n.endswith(".engine") for n in names)
    assert json.loads((out / "export_summary.json").read_text())["engine"]["status"] == "failed"


def test_lint_failure_names_the_op_and_writes_only_the_report(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(LintError) as info:
        export_model(TinyMultiTask(unsupported_op=True), _cfg(out, tensorrt={"engine": "none"}))
    msg = str(info.value)
    assert "tiny.onnx would not build in TensorRT 10.3: Det" in msg
    assert "not supported by the onnx-tensorrt parser" in msg and "--allow-lint-fail" in msg
    assert [p.name for p in out.iterdir()] == ["tiny.lint.json"]
    report = json.loads((out / "tiny.lint.json").read_text())
    assert [i["op"] for i in report["issues"] if i["severity"] == "error"] == ["Det"]


def test_allow_lint_fail_with_engine_none_keeps_the_onnx(tmp_path):
    out = tmp_path / "out"
    result = export_model(
        TinyMultiTask(unsupported_op=True),
        _cfg(out, tensorrt={"engine": "none", "allow_lint_fail": True}, half={"enabled": False}),
    )
    assert result.artifact("onnx") == out / "tiny.onnx"
    assert not result.summary["lint"]["fp32"]["ok"]


def test_fp16_past_threshold_fails_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    strict = Fp16Thresholds(max_score_delta=0.0)  # any FP16 rounding of a score fails
    with pytest.raises(Fp16Error, match=r"FP16 ONNX \(onnxruntime\) disagrees with FP32: score"):
        export_model(
            TinyMultiTask(), small_config(out, input={"imgsz": (64, 64)}, checks={"fp16": strict})
        )
    assert not out.exists()  # the folder it created is removed again
