"""ONNX Runtime backend: CPU everywhere, CUDA / TensorRT execution providers where installed."""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np

from runtime.backends.base import (
    ArtifactLoadError,
    Backend,
    BackendError,
    BackendUnavailableError,
    InputSpec,
    register_backend,
)
from runtime.hostinfo import cpu_name

# CLI spelling -> ONNX Runtime provider name.
PROVIDERS: dict[str, str] = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
# ONNX Runtime's tensor type strings -> numpy dtype names.
_ORT_DTYPES: dict[str, str] = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(uint8)": "uint8",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
}


class ProviderFallbackWarning(UserWarning):
    """A requested execution provider is not available; the session runs without it."""


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise BackendUnavailableError(
            'the onnxruntime backend needs ONNX Runtime: pip install "mtc[onnx]" '
            "(onnxruntime-gpu for the CUDA / TensorRT providers)"
        ) from None
    return onnxruntime


@register_backend("onnxruntime", formats=("onnx",), default_for=("onnx",))
class OnnxRuntimeBackend(Backend):
    def _open(self) -> InputSpec:
        if self.options.memory != "auto":
            raise BackendError("--memory applies to the tensorrt backend only; drop it for ONNX")
        if self.options.cuda_graph:
            raise BackendError(
                "--cuda-graph applies to the tensorrt backend only; drop it for ONNX"
            )
        ort = _import_onnxruntime()
        providers = self._providers(ort)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if self.options.threads is not None:
            if self.options.threads < 1:
                raise BackendError(f"--threads must be >= 1, got {self.options.threads}")
            opts.intra_op_num_threads = self.options.threads
        try:
            self._session = ort.InferenceSession(str(self.path), opts, providers=providers)
        except Exception as e:  # ORT raises its own pybind classes (InvalidProtobuf, Fail, ...)
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ArtifactLoadError(
                f"ONNX Runtime cannot load {self.path}: {first}; the file is corrupt or not an "
                "ONNX model: re-export it with mtc-export"
            ) from None
        missing = [p for p in providers if p not in self._session.get_providers()]
        if missing:
            warnings.warn(
                f"ONNX Runtime did not enable {', '.join(missing)} (failed to initialise); running "
                f"on {', '.join(self._session.get_providers())}",
                ProviderFallbackWarning,
                stacklevel=2,
            )
        self._names = tuple(o.name for o in self._session.get_outputs())
        return self._input_spec()

    def _providers(self, ort: Any) -> list[str]:
        wanted = self.options.providers or ("cpu",)
        unknown = [p for p in wanted if p not in PROVIDERS]
        if unknown:
            raise BackendError(
                f"unknown provider {unknown[0]!r}; valid: {', '.join(PROVIDERS)} (comma-separated, "
                "in order of preference)"
            )
        available = set(ort.get_available_providers())
        chosen = [PROVIDERS[p] for p in wanted if PROVIDERS[p] in available]
        absent = [PROVIDERS[p] for p in wanted if PROVIDERS[p] not in available]
        if absent:
            warnings.warn(
                f"{', '.join(absent)} requested but this onnxruntime build lacks it (has: "
                f"{', '.join(sorted(available))}); install onnxruntime-gpu. Using the rest / CPU.",
                ProviderFallbackWarning,
                stacklevel=3,
            )
        if PROVIDERS["cpu"] not in chosen:
            chosen.append(PROVIDERS["cpu"])
        return chosen

    def _input_spec(self) -> InputSpec:
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise ArtifactLoadError(
                f"{self.path.name} has {len(inputs)} inputs ({[i.name for i in inputs]}); the "
                "runtime runs single-input models (images [B,3,H,W])"
            )
        inp = inputs[0]
        shape = tuple(d if isinstance(d, int) else -1 for d in inp.shape)
        dtype = _ORT_DTYPES.get(inp.type)
        if dtype is None:
            raise ArtifactLoadError(f"input {inp.name!r} has unsupported type {inp.type}")
        if shape[0] != -1:
            return InputSpec(inp.name, shape, dtype, shape[0], shape[0], shape[0])
        opt = self.sidecar.batch.opt if self.sidecar else 1
        return InputSpec(inp.name, shape, dtype, 1, opt, None)

    def _close(self) -> None:
        del self._session

    def _infer(self, batch: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        start = time.perf_counter()
        outs = self._session.run(list(self._names), {self.input_spec.name: batch})
        ms = (time.perf_counter() - start) * 1e3
        return dict(zip(self._names, outs)), {"compute": ms}

    def _output_names(self) -> tuple[str, ...]:
        return self._names

    def _device(self) -> str:
        providers = self._session.get_providers()
        where = cpu_name() if providers[0] == PROVIDERS["cpu"] else "GPU"
        return f"{where} (onnxruntime {', '.join(providers)})"

    def versions(self) -> dict[str, str]:
        return {"onnxruntime": str(_import_onnxruntime().__version__)}
