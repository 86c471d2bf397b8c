"""Real TensorRT builds (NVIDIA GPU + TensorRT 10.x or 11.x): `make test-gpu`. They skip with the
reason anywhere else; CPU coverage of the same logic is test_tensorrt_build.py (fake API)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import IMGSZ, small_config

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def trt():
    trt = pytest.importorskip(
        "tensorrt",
        reason="TensorRT is not installed (pip install tensorrt / JetPack python3-libnvinfer); "
        "real engine builds need it and an NVIDIA GPU",
    )
    try:
        trt.Builder(trt.Logger(trt.Logger.ERROR))
    except Exception as e:  # no CUDA device / driver
        pytest.skip(f"TensorRT {trt.__version__} is installed but has no usable CUDA device: {e}")
    return trt


@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_real_engine_agrees_with_onnxruntime(trt, tiny_ckpt, tmp_path, precision):
    from export import export_model
    from export.checks.inputs import structured_input
    from runtime import load_artifact
    from runtime.sidecar import read_sidecar

    out = tmp_path / "out"
    result = export_model(
        tiny_ckpt, small_config(out, tensorrt={"engine": precision}, input={"max_batch": 4})
    )
    engine = out / f"student_{precision}.engine"
    sc = read_sidecar(engine)
    major = int(trt.__version__.split(".")[0])
    assert sc.tensorrt.version == trt.__version__ and sc.precision == precision
    if precision == "fp16":
        want = "builder_flag" if major == 10 else "strongly_typed_fp16_onnx"
        assert sc.tensorrt.fp16_path == want
    rep = result.summary["engine"]["parity_vs_onnx_fp32"]
    assert rep["ok"]
    if precision == "fp32":  # TF32 may be on: close, not exact
        assert min(rep["mask_agreement_pct"].values()) >= 99.5 and rep["mean_iou"] >= 0.99
    x = structured_input(4, IMGSZ)
    with load_artifact(engine) as be:
        got = be.infer(x)
    assert got["det"].shape[0] == 4 and got["drivable"].dtype == np.uint8
    timing = list((tmp_path / "timing").iterdir())
    assert len(timing) == 1 and timing[0].name.endswith(f"_trt{trt.__version__}.cache")


@pytest.fixture(scope="module")
def int8_folder(tiny_ckpt, tmp_path_factory):
    """The tiny export + its Q/DQ ONNX (quantize_static in --int8's layout) and calibration
    cache, until `mtc-export --int8` makes them itself."""
    import dataclasses

    from export import export_model
    from export.checks.inputs import structured_input
    from runtime.fileio import file_sha256
    from runtime.sidecar import Int8Info, read_sidecar, sidecar_path
    from runtime.tensorrt.calibration import write_calibration_cache
    from runtime.testing import quantize_like_int8

    out = tmp_path_factory.mktemp("int8_gpu") / "out"
    export_model(tiny_ckpt, small_config(out, tensorrt={"engine": "none"}, input={"max_batch": 4}))
    images = [structured_input(1, IMGSZ) for _ in range(8)]
    int8, amax = quantize_like_int8(out / "student.onnx", images)
    side = read_sidecar(out / "student.onnx")
    info = Int8Info(calibration="max", calib_images=8, calib_cache="student_int8.calib")
    side = dataclasses.replace(
        side, artifact=int8.name, sha256=file_sha256(int8), precision="int8", int8=info
    )
    side.write(sidecar_path(int8))
    write_calibration_cache(out / "student_int8.calib", amax)
    return out


def _timed_ms(backend, x, iters=50):
    import time

    for _ in range(10):
        backend.infer(x)
    t0 = time.perf_counter()
    for _ in range(iters):
        backend.infer(x)
    return (time.perf_counter() - t0) * 1000 / iters


def test_real_int8_engine_agrees_with_the_int8_onnx_and_is_timed_against_fp16(
    trt, int8_folder, tmp_path
):
    """A real INT8 engine from the Q/DQ ONNX vs that ONNX in ONNX Runtime (decision measures,
    the random model's FP16 thresholds), and INT8 vs FP16 time per frame in the same run (the
    ratio is printed, not asserted: on a model this small launch overhead dominates)."""
    from conftest import RANDOM_MODEL_FP16

    from export.checks.inputs import structured_input
    from export.onnx.deploy import DeploySpec
    from export.tensorrt.int8 import int8_engine_agreement
    from runtime import load_artifact
    from runtime.sidecar import read_sidecar
    from runtime.tensorrt.cli import main as trt_build_main

    shapes = [
        f"--{k}-shapes=images:{b}x3x{IMGSZ[0]}x{IMGSZ[1]}"
        for k, b in zip(("min", "opt", "max"), (1, 4, 4))
    ]
    engines = {}
    for precision, src in (("fp16", "student.onnx"), ("int8", "student_int8.onnx")):
        engines[precision] = tmp_path / f"student_{precision}.engine"
        argv = [
            str(int8_folder / src),
            "--precision",
            precision,
            "--engine",
            str(engines[precision]),
        ]
        assert trt_build_main([*argv, *shapes, "--cache-dir", str(tmp_path / "tc")]) == 0
    sc = read_sidecar(engines["int8"])
    major = int(trt.__version__.split(".")[0])
    assert sc.precision == "int8" and sc.int8.calib_cache == "student_int8.calib"
    assert sc.tensorrt.int8_path == ("qdq_int8_fp16_flags" if major == 10 else "qdq_strongly_typed")
    cases = [("structured", structured_input(4, IMGSZ))]
    spec = DeploySpec(input_hw=IMGSZ, det_raw=False, det_decoder="yolop_anchor")
    x = structured_input(4, IMGSZ)
    with load_artifact(engines["int8"]) as int8, load_artifact(engines["fp16"]) as fp16:
        rep = int8_engine_agreement(
            int8.infer, int8_folder / "student_int8.onnx", cases, spec, RANDOM_MODEL_FP16
        )
        assert rep.ok, rep.failures
        t8, t16 = _timed_ms(int8, x), _timed_ms(fp16, x)
    assert t8 > 0 and t16 > 0
    print(f"INT8 {t8 / 4:.3f} ms/frame vs FP16 {t16 / 4:.3f} ms/frame: {t16 / t8:.2f}x")


def test_real_dla_int8_engine_from_the_calibration_cache(trt, int8_folder, tmp_path):
    """On an Orin with TensorRT 10.x: the implicit INT8 build from the FP32 ONNX + the cache,
    GPU fallback, the layers TensorRT keeps off the DLA in the sidecar, and the engine runs.
    Anywhere else (no DLA, or TensorRT 11): the real TensorRT's answers make the builder refuse
    in one line, before building (not a skip: make gpu-check counts skips as failures)."""
    import numpy as np

    from export.checks.inputs import structured_input
    from runtime import load_artifact
    from runtime.sidecar import read_sidecar
    from runtime.tensorrt.builder import build_serialized_engine
    from runtime.tensorrt.cli import main as trt_build_main
    from runtime.tensorrt.errors import EngineBuildError

    cores = int(getattr(trt.Builder(trt.Logger(trt.Logger.ERROR)), "num_DLA_cores", 0))
    shapes = [f"--{k}-shapes=images:1x3x{IMGSZ[0]}x{IMGSZ[1]}" for k in ("min", "opt", "max")]
    major = int(trt.__version__.split(".")[0])
    if major >= 11 or cores == 0:
        why = "removed" if major >= 11 else "asked for, but this device has 0 DLA core"
        with pytest.raises(EngineBuildError, match=why):
            build_serialized_engine(
                (int8_folder / "student.onnx").read_bytes(),
                precision="int8",
                input_shapes={"images": ((1, 3, *IMGSZ),) * 3},
                dla_core=0,
                calib_cache=(int8_folder / "student_int8.calib").read_bytes(),
            )
        return
    engine = tmp_path / "student_int8.engine"
    argv = [str(int8_folder / "student.onnx"), "--precision", "int8", "--dla-core", "0"]
    argv += ["--engine", str(engine), *shapes, "--cache-dir", str(tmp_path / "tc")]
    assert trt_build_main(argv) == 0
    sc = read_sidecar(engine)
    assert sc.tensorrt.int8_path == "implicit_calib_cache"
    assert sc.tensorrt.dla_gpu_layers is not None
    with load_artifact(engine) as be:
        got = be.infer(structured_input(1, IMGSZ))
    assert np.isfinite(got["det"]).all() and got["drivable"].dtype == np.uint8
