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
    result = export_model(tiny_ckpt, small_config(out, engine=precision, max_batch=4))
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
