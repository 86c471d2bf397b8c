"""NMS appended to the TensorRT network (`--trt-nms`), on CPU through the TensorRT fake: the
fake runs the source ONNX in ONNX Runtime and the appended layers (INMSLayer, the EfficientNMS_TRT
plugin, gather/scatter/top-k) in numpy, so `mtc-run` / `runtime.run` on the engine must give what
the runtime's own numpy postprocess gives on the ONNX without NMS. Real engines: the `gpu` tests
at the end."""

from __future__ import annotations

import contextlib
import io
import json
import runpy
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from cuda_memory_fake import install_fake_tensorrt

from export.config import ExportConfig, OnnxOptions, TensorRTOptions
from export.errors import ExportConfigError
from runtime import run
from runtime.io_names import DET_COUNT, DET_OUTPUT, INPUT_NAME
from runtime.sidecar import (
    BatchRange,
    DetInfo,
    InputInfo,
    ModelInfo,
    PreprocessInfo,
    Sidecar,
    SidecarDefaultsWarning,
    TensorInfo,
    read_sidecar,
    sidecar_path,
)
from runtime.spec import IMAGENET_MEAN, IMAGENET_STD
from runtime.tensorrt.cli import main as trt_build_main
from runtime.tensorrt.nms import resolve_nms_kind

HW = (64, 128)
CLASSES = ("car", "bus", "person")
V10, V10_12, V11 = "10.3.0.30", "10.12.0.36", "11.1.0.106"


def _call(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = trt_build_main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def crowded_onnx(folder: Path, n: int = 400, seed: int = 0) -> Path:
    """images [B,3,H,W] -> det [B,N,6]: a crowded street, 3 classes, heavily overlapping boxes
    that move with the image's mean (so every frame differs), scores spread over (0, 1)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    h, w = HW
    xy = rng.uniform(0, 1, (n, 2)) * [w * 0.8, h * 0.8]
    wh = rng.uniform(6, 30, (n, 2))
    base = np.column_stack([xy, xy + wh, rng.uniform(0, 1, n), rng.integers(0, 3, n)])
    shift = np.array([[[40, 20, 40, 20, 0, 0]]], np.float32)
    inits = [
        numpy_helper.from_array(base[None].astype(np.float32), "base"),
        numpy_helper.from_array(shift, "shift"),
        numpy_helper.from_array(np.array([1, 2], np.int64), "axes"),
    ]
    nodes = [
        helper.make_node("ReduceMean", [INPUT_NAME], ["m"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Unsqueeze", ["m", "axes"], ["m3"]),
        helper.make_node("Mul", ["m3", "shift"], ["moved"]),
        helper.make_node("Add", ["base", "moved"], [DET_OUTPUT]),
    ]
    inp = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 3, h, w])
    out = helper.make_tensor_value_info(DET_OUTPUT, TensorProto.FLOAT, ["batch", n, 6])
    model = helper.make_model(
        helper.make_graph(nodes, "crowd", [inp], [out], inits),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    model.ir_version = 8
    path = folder / "crowd.onnx"
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    Sidecar.for_artifact(
        path,
        input=InputInfo(shape=(-1, 3, h, w)),
        batch=BatchRange(1, 1, 4),
        outputs=(TensorInfo(DET_OUTPUT, (-1, n, 6), "float32"),),
        preprocess=PreprocessInfo(HW, IMAGENET_MEAN, IMAGENET_STD, letterbox=True),
        det=DetInfo(class_names=CLASSES, decoder="yolop_anchor"),
        seg=None,
        precision="fp32",
        model=ModelInfo("crowd"),
    ).write(sidecar_path(path))
    return path


def frames(k: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.integers(0, 255, (90, 160, 3), dtype=np.uint8) for _ in range(k)]


@pytest.fixture(scope="module")
def crowd(tmp_path_factory) -> Path:
    return crowded_onnx(tmp_path_factory.mktemp("crowd"))


def _build(onnx: Path, tmp: Path, *extra) -> tuple[int, str, Path]:
    work = tmp / "work"
    shutil.copytree(onnx.parent, work, dirs_exist_ok=True)
    rc, _, err = _call([work / onnx.name, "--precision", "fp32", "--cache-dir", tmp / "tc", *extra])
    return rc, err, work / "crowd_fp32.engine"


CASES = [
    (V10, "efficient", "efficient"),
    (V10, "inms", "inms"),
    (V10, "auto", "efficient"),
    (V10_12, "auto", "inms"),
    (V11, "inms", "inms"),
    (V11, "auto", "inms"),
]


@pytest.mark.parametrize(("version", "asked", "kind"), CASES)
def test_engine_nms_gives_the_numpy_postprocess_boxes(
    crowd, tmp_path, monkeypatch, version, asked, kind
):
    fake = install_fake_tensorrt(monkeypatch, version)
    rc, err, engine = _build(crowd, tmp_path, "--trt-nms", asked)
    assert rc == 0, err
    [layers] = [b["layers"] for b in fake.trt.builds]
    ops = {layer["op"] for layer in layers}
    assert ("efficient_nms" in ops) == (kind == "efficient") and ("nms" in ops) == (kind == "inms")
    imgs = frames()
    got = run(engine, imgs, batch=2).results
    want = run(crowd, imgs, batch=2).results
    assert sum(len(r.boxes) for r in want) > 30  # a crowd: NMS has work to do
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-4)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-6)
        np.testing.assert_array_equal(a.classes, b.classes)
    assert {int(c) for r in got for c in r.classes} == {0, 1, 2}  # class-aware, all classes


def test_engine_outputs_and_sidecar_say_nms_in_graph(crowd, tmp_path, monkeypatch):
    install_fake_tensorrt(monkeypatch, V10)
    rc, err, engine = _build(crowd, tmp_path, "--trt-nms", "inms", "--nms-max-det", "20")
    assert rc == 0, err
    sc = read_sidecar(engine)
    assert sc.det.nms_in_graph and sc.det.nms_kind == "inms" and sc.det.max_det == 20
    assert (sc.det.conf_thres, sc.det.iou_thres) == (0.25, 0.45)  # the deploy thresholds
    assert [(o.name, o.shape, o.dtype) for o in sc.outputs] == [
        (DET_OUTPUT, (-1, 20, 6), "float32"),
        (DET_COUNT, (-1,), "int32"),
    ]
    assert sc.tensorrt.build_flags[-1] == "nms=inms(conf=0.25,iou=0.45,max_det=20,topk=1000)"
    from runtime import load_artifact

    x = np.random.default_rng(0).uniform(0, 1, (3, 3, *HW)).astype(np.float32)
    with load_artifact(engine) as be:
        out = be.infer(x)
    det, count = out[DET_OUTPUT], out[DET_COUNT]
    assert det.shape == (3, 20, 6) and count.dtype == np.int32 and count.shape == (3,)
    for i in range(3):  # best first, zero rows after the count
        s = det[i, : count[i], 4]
        assert (np.diff(s) <= 0).all() and (s > 0.25).all()
        assert not det[i, count[i] :].any()


def _one_line_error(rc, err, *parts):
    assert rc == 2 and err.count("\n") == 1, err
    for p in parts:
        assert p in err, err


def test_efficient_nms_on_tensorrt_11_is_refused_in_one_line(crowd, tmp_path, monkeypatch):
    fake = install_fake_tensorrt(monkeypatch, V11)
    rc, _, err = _call([crowd, "--precision", "fp32", "--trt-nms", "efficient"])
    _one_line_error(rc, err, "--trt-nms efficient", "TensorRT target 11", "supports inms")
    assert not [c for c, _ in fake.trt.calls if c == "build_serialized_network"]


def test_onnx_with_nms_already_or_without_det_is_refused(tmp_path, monkeypatch):
    from runtime.testing import StandinConfig, build_standin_onnx, standin_sidecar

    install_fake_tensorrt(monkeypatch, V10)
    cfg = StandinConfig(nms_in_graph=True)
    path = build_standin_onnx(tmp_path / "nms.onnx", cfg)
    standin_sidecar(path, cfg)
    rc, _, err = _call([path, "--precision", "fp32", "--trt-nms", "inms"])
    _one_line_error(rc, err, "already has NMS in its graph", "without --nms-in-graph")
    side = json.loads(sidecar_path(path).read_text())
    side["det"] = None
    sidecar_path(path).write_text(json.dumps(side))
    rc, _, err = _call([path, "--precision", "fp32", "--trt-nms", "auto"])
    _one_line_error(rc, err, "no detection output")


def test_auto_follows_the_target_table_and_the_deprecation():
    from tensorrt_fake import make_fake_tensorrt

    picks = {v: resolve_nms_kind(make_fake_tensorrt(v), "auto") for v in (V10, V10_12, V11)}
    assert picks == {V10: "efficient", V10_12: "inms", V11: "inms"}
    assert resolve_nms_kind(make_fake_tensorrt(V10), "none") is None


def test_export_config_refuses_what_the_target_cannot_do():
    with pytest.raises(ExportConfigError, match=r"target 11 supports inms"):
        ExportConfig(tensorrt=TensorRTOptions(nms="efficient", target="11"))
    with pytest.raises(ExportConfigError, match="pick one"):
        ExportConfig(tensorrt=TensorRTOptions(nms="inms"), onnx=OnnxOptions(nms_in_graph=True))
    cfg = ExportConfig(tensorrt=TensorRTOptions(nms="efficient", target="10.3"))
    assert cfg.tensorrt.nms == "efficient"


def test_cli_flag_and_device_build_script_carry_the_option(tmp_path):
    from export.cli import build_parser, config_from_args
    from export.tensorrt.build import EngineBuildConfig
    from export.tensorrt.scripts import (
        build_script_args,
        plan_for_target,
        write_build_script,
        write_trtexec_script,
    )

    cfg = config_from_args(build_parser().parse_args(["ck.pt", "--trt-nms", "auto"]))
    assert cfg.tensorrt.nms == "auto"
    build = EngineBuildConfig("fp16", "images", (3, 64, 128), 1, 1, 4, 256, 3, tmp_path, None)
    plan = plan_for_target("student", "fp16", "10.3", True, None, "efficient")
    assert build_script_args(plan, build)[-2:] == ["--trt-nms", "efficient"]
    script = write_build_script(tmp_path / "b.py", plan, build).read_text()
    assert "'--trt-nms', 'efficient'" in script
    # the script carries the target table: 10.3's NMS kinds and FP16 path, read from it
    shipped = runpy.run_path(str(tmp_path / "b.py"), run_name="device_build_script")
    row = shipped["get_target"]("10.3")
    assert (row.min_version, row.fp16_path, row.trt_nms) == (
        (10, 0),
        "builder_flag",
        ("efficient", "inms"),
    )
    sh = write_trtexec_script(tmp_path / "b.sh", plan, build).read_text()
    assert "trtexec cannot append it" in sh
    none = plan_for_target("student", "fp16", "10.3", True, None)
    assert "--trt-nms" not in build_script_args(none, build)


def test_old_sidecar_without_nms_kind_loads(crowd, tmp_path):
    work = tmp_path / "old"
    shutil.copytree(crowd.parent, work)
    side = json.loads(sidecar_path(work / crowd.name).read_text())
    assert side["det"].pop("nms_kind") is None
    sidecar_path(work / crowd.name).write_text(json.dumps(side))
    with pytest.warns(SidecarDefaultsWarning, match="nms_kind"):
        assert read_sidecar(work / crowd.name).det.nms_kind is None


@pytest.mark.parametrize(("version", "kind"), [(V10, "efficient"), (V11, "inms")])
def test_mtc_export_builds_the_engine_with_nms_and_checks_it(
    tiny_ckpt, tmp_path, monkeypatch, version, kind
):
    """`mtc-export --trt-nms`: the engine check compares with the numpy NMS of the FP32 ONNX."""
    from export.cli import main as export_main

    install_fake_tensorrt(monkeypatch, version)
    out = tmp_path / "out"
    argv = [tiny_ckpt, "-o", out, "--engine", "fp32", "--no-progress", "--trt-nms", kind]
    argv += ["--timing-cache", tmp_path / "tc", "--max-batch", "2", "--no-fp16-onnx"]
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        rc = export_main([str(a) for a in argv])
    assert rc == 0, err.getvalue()
    sc = read_sidecar(out / "student_fp32.engine")
    assert sc.det.nms_in_graph and sc.det.nms_kind == kind
    assert read_sidecar(out / "student.onnx").det.nms_kind is None
    summary = json.loads((out / "export_summary.json").read_text())["engine"]
    assert summary["parity_vs_onnx_fp32"]["ok"] and summary["trt_nms"] == kind
    assert f"'--trt-nms', '{kind}'" in (out / "student_build_engine.py").read_text()


# -- real TensorRT ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_trt():
    trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed (real engines)")
    if "tensorrt_fake" in getattr(trt, "__file__", "") or not hasattr(trt, "__file__"):
        pytest.skip("the tensorrt module here is the fake")
    try:
        trt.Builder(trt.Logger(trt.Logger.ERROR))
    except Exception as e:  # no CUDA device / driver
        pytest.skip(f"TensorRT {trt.__version__} has no usable CUDA device: {e}")
    return trt


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["efficient", "inms"])
def test_real_engine_nms_equals_onnxruntime_plus_numpy_nms(real_trt, crowd, tmp_path, kind):
    from runtime.tensorrt.nms import supported_nms

    if kind not in supported_nms(real_trt)[0]:
        pytest.skip(f"TensorRT {real_trt.__version__}'s target has no {kind}")
    rc, err, engine = _build(crowd, tmp_path, "--trt-nms", kind)
    assert rc == 0, err
    imgs = frames()
    got = run(engine, imgs, batch=2).results
    want = run(crowd, imgs, batch=2).results
    for a, b in zip(got, want, strict=True):  # same boxes; ties may order differently
        assert len(a.boxes) == len(b.boxes)
        ka = np.lexsort((a.boxes[:, 0], -a.scores))
        kb = np.lexsort((b.boxes[:, 0], -b.scores))
        np.testing.assert_allclose(a.boxes[ka], b.boxes[kb], atol=1e-2)
        np.testing.assert_allclose(a.scores[ka], b.scores[kb], atol=1e-4)
        np.testing.assert_array_equal(a.classes[ka], b.classes[kb])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
