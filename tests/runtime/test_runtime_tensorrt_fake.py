"""TensorRT backend logic on CPU through the one TensorRT fake (tests/fakes; see its docstring for
what this does and does not prove): engines are the stand-in ONNX built by mtc's builder."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from runtime_helpers import install_fake_trt, make_fake_engine, split_frame

from runtime import load_artifact, run
from runtime.backends import BackendUnavailableError, InputMismatchError
from runtime.backends.cuda_memory import CudaError, create_memory
from runtime.backends.tensorrt import EngineIncompatibleError

PER_SAMPLE_IN = 3 * 32 * 64 * 4


def batch(n: int) -> np.ndarray:
    x = np.zeros((n, 3, 32, 64), np.float32)
    x[::2, 0] = 1.0  # even samples: drivable everywhere
    return x


def test_buffers_are_sized_once_for_the_profile_max(tmp_path, monkeypatch):
    mems = install_fake_trt(monkeypatch)
    with load_artifact(make_fake_engine(tmp_path, profile=(1, 2, 4))) as be:
        sizes = sorted(mems[0].device_bytes.values())
        assert sizes == sorted([4 * PER_SAMPLE_IN, 4 * 8 * 6 * 4, 4 * 32 * 64, 4 * 32 * 64])
        assert [p.shape[0] for p in mems[0].pinned] == [4, 4, 4, 4]
        be.infer(batch(4))
        be.infer(batch(2))
        assert sorted(mems[0].device_bytes.values()) == sizes  # nothing reallocated per call
    assert mems[0].closed and mems[0].device_bytes == {}


def test_actual_batch_sets_the_input_shape_and_outputs_follow(tmp_path, monkeypatch):
    install_fake_trt(monkeypatch)
    with load_artifact(make_fake_engine(tmp_path, profile=(1, 2, 4))) as be:
        ctx = be._context
        out = be.infer(batch(3))
        assert ctx.input_shapes[-1] == (3, 3, 32, 64)
        assert out["drivable"].shape == (3, 32, 64) and out["det"].shape == (3, 8, 6)
        assert [bool(m.all()) for m in out["drivable"]] == [True, False, True]
        assert be.infer(batch(3))["det"].shape[0] == 3
        assert ctx.input_shapes.count((3, 3, 32, 64)) == 1  # same batch: shape not set again
        kept = out["lane"]
        be.infer(batch(1))
        assert kept.shape == (3, 32, 64)  # returned arrays are copies, not pinned views


def test_short_batch_below_profile_min_is_padded(tmp_path, monkeypatch):
    install_fake_trt(monkeypatch)
    with load_artifact(make_fake_engine(tmp_path, profile=(2, 2, 4))) as be:
        out = be.infer(batch(1))
        assert be._context.input_shapes[-1] == (2, 3, 32, 64)
        assert out["drivable"].shape == (1, 32, 64) and out["drivable"].all()


def test_out_of_profile_batch_is_refused(tmp_path, monkeypatch):
    install_fake_trt(monkeypatch)
    with load_artifact(make_fake_engine(tmp_path, profile=(1, 2, 4))) as be:
        assert (be.input_spec.batch_min, be.input_spec.batch_opt, be.input_spec.batch_max) == (
            1,
            2,
            4,
        )
        with pytest.raises(InputMismatchError, match=r"outside what the artifact accepts \(1..4\)"):
            be.infer(batch(5))


def test_device_timings_are_reported(tmp_path, monkeypatch):
    install_fake_trt(monkeypatch)
    with load_artifact(make_fake_engine(tmp_path)) as be:
        be.infer(batch(2))
        assert set(be.last_timing) == {"h2d", "compute", "d2h", "infer"}
        assert all(v >= 0 for v in be.last_timing.values())
        assert be.device == "Fake GPU (TensorRT 10.3.0)"


def test_engine_from_another_tensorrt_says_how_to_fix(tmp_path, monkeypatch):
    mems = install_fake_trt(monkeypatch)
    art = make_fake_engine(tmp_path, plan_version="10.0.1")
    with pytest.raises(EngineIncompatibleError) as e:
        load_artifact(art)
    msg = str(e.value)
    assert "built with TensorRT 10.0.1 on GPU Orin (sidecar)" in msg
    assert "this machine has TensorRT 10.3.0 on GPU Fake GPU" in msg and "mtc-export" in msg
    assert mems[0].closed  # nothing leaked on the failure path


def test_pipeline_runs_on_the_engine(tmp_path, monkeypatch):
    install_fake_trt(monkeypatch)
    res = run(
        make_fake_engine(tmp_path), [split_frame() for _ in range(5)], batch=4, progress=False
    )
    assert len(res.results) == 5 and res.report.info.backend == "tensorrt"
    assert res.report.info.tensorrt_version == "10.3.0" and res.report.info.precision == "fp16"
    assert {"h2d", "compute", "d2h"} <= set(res.report.stages)
    np.testing.assert_allclose(res.results[0].scores, [0.9, 0.7], rtol=1e-6)  # NMS dropped 0.8


def test_missing_tensorrt_and_cuda_bindings(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(BackendUnavailableError, match="TensorRT's Python package"):
        load_artifact(make_fake_engine(tmp_path))
    for mod in (
        "cuda",
        "cuda.bindings",
        "cuda.bindings.runtime",
        "cuda.cudart",
        "pycuda",
        "pycuda.driver",
    ):
        monkeypatch.setitem(sys.modules, mod, None)
    with pytest.raises(BackendUnavailableError, match=r'pip install "mtc\[tensorrt\]"'):
        create_memory("auto")
    with pytest.raises(Exception, match="valid: auto, cuda-python, pycuda"):
        create_memory("cupy")


def test_cuda_python_without_a_driver_names_the_cuda_error():
    pytest.importorskip("cuda.bindings", reason="cuda-python not installed")
    try:
        mem = create_memory("cuda-python")
    except CudaError as e:
        assert "cudaGetDeviceCount failed: cudaError" in str(e)
    else:  # a machine with a GPU: the adapter works instead
        mem.close()
