"""End to end on a tiny YOLOP (width 0.25, depth 0.33, 64x128): the default export (NMS outside,
argmax masks) on a machine without TensorRT, and the NMS-in-graph + logits variant. Each runs
once per session; the tests read what it wrote."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from conftest import IMGSZ
from onnx import TensorProto

from compressor import load_checkpoint
from compressor.models.yolop import YOLOP_ANCHORS, YOLOP_STRIDES
from export.checks.inputs import structured_input
from export.checks.ort import OrtModel
from export.checks.parity import match_rows
from export.cli import main
from runtime import load_artifact
from runtime.boxes import postprocess_detections, xywh_to_xyxy
from runtime.fileio import file_sha256
from runtime.sidecar import read_sidecar

N_CANDIDATES = 3 * sum((IMGSZ[0] // s) * (IMGSZ[1] // s) for s in YOLOP_STRIDES)  # 504


RANDOM_FP16_FLAGS = [
    "--fp16-min-mask-agreement",
    "95",
    "--fp16-min-iou",
    "0.5",
    "--fp16-max-score-delta",
    "1",
]  # see conftest.RANDOM_MODEL_FP16


def _cli(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv] + ["--no-progress"])
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="session")
def default_export(tiny_ckpt, tmp_path_factory):
    """`mtc-export CKPT` with default flags (engine fp16) where TensorRT cannot be imported:
    ONNX artifacts are written, exit 2, the error names what to install and the ready build."""
    out = tmp_path_factory.mktemp("default") / "out"
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError
        rc, stdout, stderr = _cli(
            [
                tiny_ckpt,
                "-o",
                out,
                "--max-batch",
                "2",
                "--timing-cache",
                out.parent / "timing",
                *RANDOM_FP16_FLAGS,
            ]
        )
    return out, rc, stdout, stderr


@pytest.fixture(scope="session")
def nms_export(tiny_ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("nms") / "out"
    rc, stdout, stderr = _cli(
        [
            tiny_ckpt,
            "-o",
            out,
            "--name",
            "nms",
            "--max-batch",
            "2",
            "--nms-in-graph",
            "--seg-output",
            "logits",
            "--conf",
            "0.05",
            "--simplifier",
            "none",
            "--engine",
            "none",
            *RANDOM_FP16_FLAGS,
        ]
    )
    assert rc == 0, stderr
    return out, json.loads((out / "export_summary.json").read_text()), stdout


def _summary(out):
    return json.loads((out / "export_summary.json").read_text())


def test_no_tensorrt_exit2_one_error_line_and_table(default_export):
    out, rc, stdout, stderr = default_export
    assert rc == 2
    [line] = stderr.strip().splitlines()
    assert line.startswith("error: TensorRT is not installed")
    assert "pip install tensorrt" in line and "python3-libnvinfer" in line
    assert str(out / "student_trtexec.sh") in line and str(out / "student_build_engine.py") in line
    rows = stdout.splitlines()
    assert rows[0].split() == ["artifact", "size", "checks"]
    assert rows[1].startswith("student.onnx") and "parity vs torch PASS" in rows[1]
    assert "lint TRT 10.3 PASS" in rows[1] and "emulated FP16 vs FP32: masks" in rows[2]
    [engine_row] = [r.split(None, 2) for r in rows if r.startswith("engine ")]
    assert engine_row == ["engine", "-", "not built: TensorRT is not installed"]
    assert f"summary: {out / 'export_summary.json'}" in stdout
    assert _summary(out)["engine"]["status"] == "not_built"
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "export_summary.json",
        "student.onnx",
        "student.onnx.json",
        "student_build_engine.py",
        "student_fp16.onnx",
        "student_fp16.onnx.json",
        "student_trtexec.sh",
    ]  # no engine, no staging folder left behind


def test_onnx_io_opset_single_file_and_provenance(default_export):
    out = default_export[0]
    m = onnx.load(str(out / "student.onnx"))
    assert [i.version for i in m.opset_import if i.domain in ("", "ai.onnx")] == [17]

    def io(v):
        dims = [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        return v.name, v.type.tensor_type.elem_type, dims

    assert [io(v) for v in m.graph.input] == [("images", TensorProto.FLOAT, ["batch", 3, 64, 128])]
    assert [io(v) for v in m.graph.output] == [
        ("det", TensorProto.FLOAT, ["batch", N_CANDIDATES, 6]),
        ("drivable", TensorProto.UINT8, ["batch", 64, 128]),
        ("lane", TensorProto.UINT8, ["batch", 64, 128]),
    ]
    assert not any(t.data_location == TensorProto.EXTERNAL for t in m.graph.initializer)
    meta = {p.key: p.value for p in m.metadata_props}
    assert meta["mtc.simplifier"].startswith("onnxslim 0.1.")
    assert "TorchScript" in meta["mtc.exporter"]


def test_det_is_the_models_decode_in_xyxy_score_class(default_export, tiny_ckpt):
    out = default_export[0]
    model, _ = load_checkpoint(tiny_ckpt)
    x = structured_input(2, IMGSZ)
    with torch.no_grad():
        pred = model.eval()(torch.from_numpy(x))["det"].numpy()
    det = OrtModel(onnx.load(str(out / "student.onnx")))(x)["det"]
    scale = np.abs(pred[..., :4]).max()
    assert np.abs(det[..., :4] - xywh_to_xyxy(pred[..., :4])).max() < 1e-4 + 2e-4 * scale
    assert np.abs(det[..., 4] - pred[..., 4] * pred[..., 5]).max() < 1e-3
    assert np.all(det[..., 5] == 0) and np.all(det[..., 2] >= det[..., 0])


def test_parity_numbers_in_summary(default_export):
    out = default_export[0]
    p = _summary(out)["parity"]
    assert p["ok"] and p["cases"] == ["random-b1", "scene-b1", "random-b2", "scene-b2"]
    o = p["outputs"]
    assert 0 < o["det.boxes"]["value"] <= o["det.boxes"]["tol"] < 0.2  # px, scale-aware
    assert o["det.scores"]["value"] <= 1e-3 and o["det.classes"]["value"] == 0
    assert o["drivable"]["value"] == 0 and o["lane"]["value"] == 0  # mismatched pixels


def test_fp16_onnx_types_and_agreement(default_export):
    out = default_export[0]
    m = onnx.load(str(out / "student_fp16.onnx"))
    inits = {t.name: t.data_type for t in m.graph.initializer}
    convs = [n for n in m.graph.node if n.op_type == "Conv"]
    assert convs and all(inits[n.input[1]] == TensorProto.FLOAT16 for n in convs)
    resize_scales = [n.input[2] for n in m.graph.node if n.op_type == "Resize"]
    assert resize_scales and all(inits[s] == TensorProto.FLOAT for s in resize_scales)
    assert {v.type.tensor_type.elem_type for v in m.graph.input} == {TensorProto.FLOAT}
    assert m.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    producers = {o: n for n in m.graph.node for o in n.output}
    for sig in (n for n in m.graph.node if n.op_type == "Sigmoid"):  # decode stays FP32
        src = producers[sig.input[0]]
        assert src.op_type == "Cast" and src.attribute[0].i == TensorProto.FLOAT
    s = _summary(out)
    ort, emu = s["fp16"]["onnxruntime"], s["fp16"]["emulated"]
    for f in (ort, emu):
        assert f["ok"] and min(f["mask_agreement_pct"].values()) >= 95.0
        # top-100 per image over 1+1+2+2 images, less boxes under 1 px^2
        assert 300 < f["boxes_compared"] <= 100 * 6
        assert f["mean_iou"] >= 0.5 and f["score_max_delta"] <= 1.0
    # ORT CPU computes FP16 nodes in FP32; the rounding emulation is the stricter estimate
    assert min(emu["mask_agreement_pct"].values()) <= min(ort["mask_agreement_pct"].values())
    assert s["fp16_conversion"]["fp16_nodes"] > 200
    assert "Sigmoid" in s["fp16_conversion"]["fp32_ops"]


def test_sidecars_validate_and_describe_the_artifacts(default_export, tiny_ckpt):
    out = default_export[0]
    sc = read_sidecar(out / "student.onnx")
    assert (sc.format, sc.precision, sc.artifact) == ("onnx", "fp32", "student.onnx")
    assert (sc.batch.min, sc.batch.opt, sc.batch.max) == (1, 1, 2)
    assert sc.input.shape == (-1, 3, 64, 128)
    assert [(o.name, o.shape, o.dtype) for o in sc.outputs] == [
        ("det", (-1, N_CANDIDATES, 6), "float32"),
        ("drivable", (-1, 64, 128), "uint8"),
        ("lane", (-1, 64, 128), "uint8"),
    ]
    assert sc.det.nms_in_graph is False and sc.det.layout == "xyxy_score_class"
    assert sc.det.anchors == tuple(
        tuple(tuple(map(float, a)) for a in lvl) for lvl in YOLOP_ANCHORS
    )
    assert sc.det.strides == YOLOP_STRIDES and sc.seg.output == "argmax_uint8"
    assert sc.model.name == "yolop" and sc.model.checkpoint_sha256 == file_sha256(tiny_ckpt)
    assert sc.model.params > 0 and sc.tensorrt is None
    assert read_sidecar(out / "student_fp16.onnx").precision == "fp16"


def test_runtime_loads_and_runs_what_was_written(default_export):
    out = default_export[0]
    x = structured_input(2, IMGSZ)
    with load_artifact(out / "student_fp16.onnx") as be:
        got = be.infer(x)
    assert got["det"].shape == (2, N_CANDIDATES, 6) and got["lane"].dtype == np.uint8
    checks = _summary(out)["runtime_check"]
    assert set(checks) == {"student.onnx", "student_fp16.onnx"}
    assert all(c["max_abs_vs_ort"] <= 1e-5 for c in checks.values())


def test_trtexec_line_and_build_script(default_export):
    out = default_export[0]
    eng = _summary(out)["engine"]
    assert eng["target"] == "10.3" and eng["fp16_path"] == "builder_flag"
    for flag in (
        "--onnx=student.onnx",
        "--saveEngine=student_fp16.engine",
        "--fp16",
        "--minShapes=images:1x3x64x128",
        "--optShapes=images:1x3x64x128",
        "--maxShapes=images:2x3x64x128",
        "--memPoolSize=workspace:4096M",
        "--builderOptimizationLevel=3",
        "--timingCacheFile=",
    ):
        assert flag in eng["trtexec"]
    assert "--stronglyTyped" not in eng["trtexec"]
    subprocess.run(["sh", "-n", str(out / "student_trtexec.sh")], check=True)
    compile((out / "student_build_engine.py").read_text(), "build_engine.py", "exec")


def test_lint_reported_for_both_onnx(default_export):
    lint = _summary(default_export[0])["lint"]
    assert lint["fp32"]["ok"] and lint["fp16"]["ok"]
    assert lint["fp32"]["target_tensorrt"] == "10.3" and lint["fp32"]["opset"] == 17
    assert {"Conv", "HardSwish", "Resize", "ArgMax"} <= set(lint["fp32"]["ops"])


def test_nms_in_graph_matches_runtime_postprocess(nms_export, tiny_ckpt):
    out = nms_export[0]
    m = onnx.load(str(out / "nms.onnx"))
    ops = {n.op_type for n in m.graph.node}
    assert {"NonMaxSuppression", "TopK", "ScatterElements", "GatherElements"} <= ops
    x = structured_input(2, IMGSZ)
    got = OrtModel(m)(x)
    assert got["det"].shape == (2, 300, 6) and got["det_count"].dtype == np.int32
    assert got["drivable"].shape == (2, 2, 64, 128) and got["drivable"].dtype == np.float32
    model, _ = load_checkpoint(tiny_ckpt)
    with torch.no_grad():
        pred = model.eval()(torch.from_numpy(x))["det"].numpy()
    ref = postprocess_detections(pred, 0.05, 0.6, 300)
    for b in range(2):
        k = int(got["det_count"][b])
        assert k == len(ref[b]) > 0
        rows = got["det"][b, :k].astype(np.float64)
        pairs = match_rows(ref[b], rows)
        assert len(pairs) == k
        assert max(np.abs(ref[b][i] - rows[j]).max() for i, j in pairs) < 0.1
        assert not got["det"][b, k:].any()  # padding rows are zero


def test_nms_variant_sidecar_and_simplifier_none(nms_export):
    out, s, stdout = nms_export
    sc = read_sidecar(out / "nms.onnx")
    assert sc.det.nms_in_graph and sc.det.max_det == 300 and sc.det.conf_thres == 0.05
    assert sc.output("det_count").shape == (-1,) and sc.output("det_count").dtype == "int32"
    assert sc.output("lane").shape == (-1, 2, 64, 128) and sc.seg.output == "logits"
    assert s["simplifier"]["name"] == "none" and s["simplifier"]["version"] is None
    assert s["simplifier"]["nodes_before"] == s["simplifier"]["nodes_after"]
    assert s["parity"]["ok"] and s["lint"]["fp32"]["ok"]
    assert s["parity"]["outputs"]["det_count"]["value"] == 0
    assert s["engine"]["status"] == "skipped" and not list(out.glob("*.engine"))
    assert "skipped: --engine none" in stdout
    assert s["fp16"]["emulated"]["logits_max_abs"]["lane"] > 0


@pytest.mark.parametrize("version", ["10.3.0.30", "11.1.0.106"])
def test_generated_build_script_runs_against_fake_tensorrt(default_export, tmp_path, version):
    """The standalone script's logic (not TensorRT itself): engine + sidecar the runtime accepts."""
    import shutil
    from pathlib import Path

    out = tmp_path / "copy"
    shutil.copytree(default_export[0], out)
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "tensorrt.py").write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parents[1] / 'fakes')!r})\n"
        "from tensorrt_fake import make_fake_tensorrt\n"
        f"sys.modules[__name__] = make_fake_tensorrt({version!r})\n"
    )
    env = {
        "PYTHONPATH": str(shim),
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "MTC_TIMING_CACHE": str(tmp_path / "tc"),
    }
    run = subprocess.run(
        [sys.executable, str(out / "student_build_engine.py")],
        env=env,
        capture_output=True,
        text=True,
    )
    if version.startswith("11"):  # the script was written for 10.3: it refuses, loudly
        assert run.returncode != 0 and "re-export with --trt-target 11" in run.stderr
        assert not (out / "student_fp16.engine").exists()
        return
    assert run.returncode == 0, run.stderr
    engine = out / "student_fp16.engine"
    plan = json.loads(engine.read_bytes())
    assert plan["builder_flags"] == ["FP16"] and plan["network_flags"] == 0
    assert plan["profiles"] == [{"images": [[1, 3, 64, 128], [1, 3, 64, 128], [2, 3, 64, 128]]}]
    sc = read_sidecar(engine)  # schema-valid, hash matches
    assert (sc.format, sc.precision, sc.tensorrt.fp16_path) == ("engine", "fp16", "builder_flag")
    assert sc.source_onnx_sha256 == file_sha256(out / "student.onnx")
    assert [p.name for p in (tmp_path / "tc").iterdir()] == [
        "timing_unknown-gpu_trt10.3.0.30.cache"
    ]
