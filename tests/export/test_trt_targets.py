"""One table of TensorRT targets (runtime/tensorrt/targets.py) feeds ExportConfig, `mtc-export
--trt-target`, the lint, the trtexec script and the engine builder. A fake target added to the
table (and nowhere else) must be accepted and honoured by every one of them, so a consumer that
kept its own list of versions fails here."""

from __future__ import annotations

import argparse
import dataclasses
import json
import types

import pytest
from onnx import TensorProto, helper

from export.cli import build_parser, main
from export.config import (
    ExportConfig,
    HalfOptions,
    OnnxOptions,
    TensorRTOptions,
    resolve_trt_target,
)
from export.errors import ExportConfigError
from export.tensorrt.build import EngineBuildConfig
from export.tensorrt.lint import DATA_DIR, lint_onnx
from export.tensorrt.scripts import plan_for_target, trtexec_command
from runtime.tensorrt import builder as trt_build
from runtime.tensorrt.targets import (
    DEFAULT_TARGET,
    TARGETS,
    TrtTargetError,
    get_target,
    register_target,
    target_for_version,
    target_names,
)

FAKE = "99"


def _trt_target_action(parser: argparse.ArgumentParser) -> argparse.Action:
    [action] = [a for a in parser._actions if "--trt-target" in a.option_strings]
    return action


@pytest.fixture
def fake_target(tmp_path):
    """A target "99": its own op table (the 11 one with Unique supported), opsets 9..17,
    constant axes required, strongly typed FP16 with an extra trtexec flag."""
    table = json.loads((DATA_DIR / get_target("11").op_table).read_text())
    table.update(tensorrt=FAKE, confidence="derived")
    table["ops"]["Unique"] = {"supported": True, "types": ["FP32"]}
    path = tmp_path / f"trt_ops_{FAKE}.json"
    path.write_text(json.dumps(table))
    entry = dataclasses.replace(
        get_target("11"),
        name=FAKE,
        min_version=(99, 0),
        op_table=str(path),  # absolute: outside export/tensorrt/data
        opset_min=9,
        opset_max=17,
        const_axes=True,
        trtexec_fp16=("--stronglyTyped", "--fakeFlag"),
    )
    register_target(entry)
    yield entry
    TARGETS.unregister(FAKE)


def _model(nodes, inputs, outputs, opset=17):
    g = helper.make_graph(nodes, "g", inputs, outputs)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _unique_model(opset=17):
    return _model(
        [helper.make_node("Unique", ["x"], ["y"], name="uniq")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])],
        opset,
    )


def test_table_is_what_the_cli_offers():
    assert _trt_target_action(build_parser()).choices == target_names() == ("10.3", "11")
    assert DEFAULT_TARGET in target_names()
    assert get_target("11").strongly_typed and not get_target("10.3").strongly_typed
    with pytest.raises(TrtTargetError, match=r"'10\.4' is not one of 10\.3, 11; did you mean"):
        get_target("10.4")


@pytest.mark.parametrize(
    "version, want",
    [("10.3.0.30", "10.3"), ("10.8.1", "10.3"), ("11.1.0.106", "11"), ("8.6.1", None), ("", None)],
)
def test_installed_version_picks_its_target(version, want):
    got = target_for_version(version)
    assert (got.name if got else None) == want
    # the builder (standalone-capable) picks over the same rows
    row = trt_build.installed_target(types.SimpleNamespace(__version__=version))
    assert (row[0] if row else None) == want
    assert resolve_trt_target(None, version) == (want or DEFAULT_TARGET)


def test_a_fake_target_is_accepted_everywhere(fake_target, tmp_path, capsys):
    # CLI choices and config
    parser = build_parser()
    assert FAKE in _trt_target_action(parser).choices
    cfg = ExportConfig(tensorrt=TensorRTOptions(target=FAKE))
    assert resolve_trt_target(cfg.tensorrt.target, None) == FAKE
    assert resolve_trt_target(None, "99.2.0") == FAKE  # detected from tensorrt.__version__
    # the table's opset range, not 10.3's
    with pytest.raises(ExportConfigError, match=r"outside 9\.\.17, the range TensorRT 99"):
        ExportConfig(tensorrt=TensorRTOptions(target=FAKE), onnx=OnnxOptions(opset=18))
    with pytest.raises(ExportConfigError, match="TensorRT 99 builds from the FP16 ONNX"):
        ExportConfig(
            tensorrt=TensorRTOptions(target=FAKE, engine="fp16"), half=HalfOptions(enabled=False)
        )
    # lint reads its op table, opset range and constant-axes rule
    rep = lint_onnx(_unique_model(), FAKE)
    assert rep.target == FAKE and not [i for i in rep.errors if i.check == "op-support"]
    assert not lint_onnx(_unique_model(), "11").ok  # 11's table still says unsupported
    assert [i.check for i in lint_onnx(_unique_model(opset=18), FAKE).errors] == ["opset"]
    squeeze = _model(
        [helper.make_node("Squeeze", ["x", "axes"], ["y"], name="sq")],
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 8]),
            helper.make_tensor_value_info("axes", TensorProto.INT64, [1]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])],
    )
    assert any("axes input is not a constant" in i.reason for i in lint_onnx(squeeze, FAKE).errors)
    assert not any(i.check == "op-restriction" for i in lint_onnx(squeeze, "11").errors)
    # `mtc-export --lint-only --trt-target 99` goes through the CLI's parser
    onnx_path = tmp_path / "u.onnx"
    onnx_path.write_bytes(_unique_model().SerializeToString())
    rc = main([str(onnx_path), "--lint-only", "--trt-target", FAKE, "-o", str(tmp_path / "r")])
    out = capsys.readouterr().out
    assert f"TensorRT {FAKE} lint" in out and "op-support" not in out, out
    assert rc in (0, 2)
    # trtexec flags and the FP16 path of the build plan
    plan = plan_for_target("m", "fp16", FAKE, True, None)
    assert plan.fp16_path == "strongly_typed_fp16_onnx" and plan.onnx == "m_fp16.onnx"
    build = EngineBuildConfig("fp16", "images", (3, 64, 64), 1, 1, 2, 256, 3, tmp_path)
    cmd = trtexec_command(plan, build)
    assert "--stronglyTyped" in cmd and "--fakeFlag" in cmd and "--fp16" not in cmd
    assert f"trt{FAKE}.cache" in " ".join(cmd)
    # the builder maps an installed 99.x to it
    assert trt_build.installed_target(types.SimpleNamespace(__version__="99.0.1"))[0] == FAKE


def test_unknown_target_is_refused_with_the_table(fake_target):
    with pytest.raises(ExportConfigError, match=f"not one of 10.3, 11, {FAKE}"):
        ExportConfig(tensorrt=TensorRTOptions(target="12"))
    with pytest.raises(ExportConfigError, match="no op table for TensorRT '12'"):
        lint_onnx(_unique_model(), "12")
