from __future__ import annotations

import dataclasses

import numpy as np
import onnxruntime
import pytest
from runtime_helpers import make_artifact

from runtime import load_artifact
from runtime.backends import (
    ArtifactLoadError,
    Backend,
    BackendError,
    BackendStateError,
    InputMismatchError,
    UnknownBackendError,
    get_backend,
    register_backend,
)
from runtime.backends.base import DuplicateBackendError
from runtime.backends.onnxruntime import OnnxRuntimeBackend, ProviderFallbackWarning
from runtime.fileio import file_sha256
from runtime.pipeline import ArtifactNotFoundError, RunConfigError
from runtime.sidecar import read_sidecar, sidecar_path


def test_infer_spec_and_timing(tmp_path):
    with load_artifact(make_artifact(tmp_path)) as be:
        spec = be.input_spec
        assert (spec.name, spec.shape, spec.dtype) == ("images", (-1, 3, 32, 64), "float32")
        assert spec.batch_max is None
        x = np.zeros((3, 3, 32, 64), np.float32)
        x[1, 0] = 1.0
        out = be.infer(x)
        assert out["det"].shape == (3, 6, 6) and out["drivable"].dtype == np.uint8
        assert out["drivable"][1].all() and not out["drivable"][0].any()
        assert set(be.last_timing) == {"compute", "infer"}
        assert be.last_timing["infer"] >= be.last_timing["compute"] > 0
        assert "CPUExecutionProvider" in be.device
    with pytest.raises(BackendStateError, match="not open"):
        be.infer(x)


def test_input_checks_say_what_fits(tmp_path):
    with load_artifact(make_artifact(tmp_path)) as be:
        with pytest.raises(InputMismatchError, match=r"float64, expected float32 \[B,3,32,64\]"):
            be.infer(np.zeros((1, 3, 32, 64)))
        with pytest.raises(InputMismatchError, match=r"shape is \[1, 3, 32, 32\]"):
            be.infer(np.zeros((1, 3, 32, 32), np.float32))
        with pytest.raises(InputMismatchError, match="numpy array"):
            be.infer([0.0])


def test_fixed_batch_model_pads_a_short_batch(tmp_path):
    with load_artifact(make_artifact(tmp_path, fixed_batch=4)) as be:
        assert (be.input_spec.batch_min, be.input_spec.batch_max) == (4, 4)
        x = np.zeros((1, 3, 32, 64), np.float32)
        x[0, 1] = 1.0
        out = be.infer(x)
        assert out["lane"].shape == (1, 32, 64) and out["lane"].all()
        with pytest.raises(InputMismatchError, match="outside"):
            be.infer(np.zeros((5, 3, 32, 64), np.float32))


def test_corrupt_onnx_is_a_clear_error(tmp_path):
    art = make_artifact(tmp_path)
    sc = read_sidecar(art)
    art.write_bytes(b"\x08\x01garbage" * 50)
    dataclasses.replace(sc, sha256=file_sha256(art)).write(sidecar_path(art))  # hash passes
    with pytest.raises(ArtifactLoadError, match="corrupt or not an ONNX model"):
        load_artifact(art)


def test_providers(tmp_path):
    art = make_artifact(tmp_path)
    with pytest.raises(BackendError, match="unknown provider 'gpu'; valid: cpu, cuda, tensorrt"):
        load_artifact(art, providers="gpu")
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider; the fallback path cannot be shown")
    with pytest.warns(ProviderFallbackWarning, match="CUDAExecutionProvider"):
        be = load_artifact(art, providers="cuda,cpu")
    with be:
        assert "CPUExecutionProvider" in be.device
        assert be.infer(np.zeros((1, 3, 32, 64), np.float32))["det"].shape[0] == 1


def test_loading_errors(tmp_path):
    with pytest.raises(ArtifactNotFoundError, match="does not exist"):
        load_artifact(tmp_path / "nope.onnx")
    art = make_artifact(tmp_path)
    with pytest.raises(RunConfigError, match="backend 'tensorrt' runs engine artifacts"):
        load_artifact(art, backend="tensorrt")
    with pytest.raises(UnknownBackendError, match="did you mean 'onnxruntime'"):
        load_artifact(art, backend="onnxruntim")
    with pytest.raises(BackendError, match="--memory applies to the tensorrt backend"):
        load_artifact(art, memory="pycuda")


def test_registry_is_strict():
    assert get_backend("onnxruntime") is OnnxRuntimeBackend
    with pytest.raises(DuplicateBackendError, match="already registered"):

        @register_backend("onnxruntime", formats=("onnx",))
        class Again(Backend):  # pragma: no cover - never instantiated
            pass
