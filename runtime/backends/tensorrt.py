"""TensorRT backend (TensorRT 10.x / 11.x tensor API; the 8.x binding API is gone).

Buffers are allocated once, for the optimisation profile's max batch: pinned host + device per IO
tensor. Each call sets the actual input shape, then H2D -> execute_async_v3 -> D2H on one stream
with a CUDA event between stages, so h2d / compute / d2h are device times, not host guesses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.backends.base import (
    ArtifactLoadError,
    Backend,
    BackendError,
    BackendUnavailableError,
    InputMismatchError,
    InputSpec,
    register_backend,
)
from runtime.backends.cuda_memory import DeviceMemory, create_memory
from runtime.errors import MtcError

# TensorRT DataType member names -> numpy dtype names.
_DTYPES: dict[str, str] = {
    "FLOAT": "float32",
    "HALF": "float16",
    "INT8": "int8",
    "INT32": "int32",
    "INT64": "int64",
    "UINT8": "uint8",
    "BOOL": "bool",
}


class EngineIncompatibleError(BackendError):
    """TensorRT refused the plan: built by another TensorRT version or for another GPU."""


def _import_tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError:
        raise BackendUnavailableError(
            "the tensorrt backend needs TensorRT's Python package: on Jetson it comes with JetPack "
            "(apt python3-libnvinfer; create venvs with --system-site-packages), on desktops pip "
            "install tensorrt; or run the .onnx with --backend onnxruntime"
        ) from None
    return tensorrt


def _create_memory(name: str) -> DeviceMemory:
    """Indirection so CPU tests can inject a fake adapter."""
    return create_memory(name)


@dataclass
class _Buffer:
    name: str
    host: np.ndarray  # pinned, sized for the profile's max batch
    device: int


@register_backend("tensorrt", formats=("engine",), default_for=("engine",))
class TensorRTBackend(Backend):
    def _open(self) -> InputSpec:
        if self.options.providers:
            raise BackendError("--providers applies to the onnxruntime backend only; drop it")
        if self.options.threads is not None:
            raise BackendError("--threads applies to the onnxruntime backend only; drop it")
        trt = _import_tensorrt()
        plan = self.path.read_bytes()
        self._mem: DeviceMemory | None = _create_memory(self.options.memory)
        try:
            return self._setup(trt, plan)
        except BaseException:
            self._close()
            raise

    def _setup(self, trt: Any, plan: bytes) -> InputSpec:
        mem = self._memory()
        self._trt = trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            raise EngineIncompatibleError(self._mismatch_message())
        inputs, outputs = self._io_names()
        if len(inputs) != 1:
            raise ArtifactLoadError(
                f"{self.path.name} has inputs {inputs}; the runtime runs single-input engines"
            )
        name = inputs[0]
        pmin, popt, pmax = self._profile(name)
        self._context = self._engine.create_execution_context()
        if not self._context.set_input_shape(name, pmax):
            raise ArtifactLoadError(f"TensorRT rejected the profile's own max shape {pmax}")
        self._stream = mem.stream_create()
        self._events = [mem.event_create() for _ in range(4)]
        self._input = self._bind(name, pmax)
        self._outputs = [self._bind(o, tuple(self._context.get_tensor_shape(o))) for o in outputs]
        self._batch = pmax[0]
        self._out_shapes = [b.host.shape for b in self._outputs]
        shape = tuple(int(d) for d in self._engine.get_tensor_shape(name))
        return InputSpec(name, shape, self._input.host.dtype.name, pmin[0], popt[0], pmax[0])

    def _memory(self) -> DeviceMemory:
        if self._mem is None:
            raise BackendError("tensorrt backend has no device memory (not open)")
        return self._mem

    def _io_names(self) -> tuple[list[str], list[str]]:
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        is_input = {
            n: self._engine.get_tensor_mode(n) == self._trt.TensorIOMode.INPUT for n in names
        }
        return [n for n in names if is_input[n]], [n for n in names if not is_input[n]]

    def _profile(self, name: str) -> tuple[tuple[int, ...], ...]:
        """(min, opt, max) input shapes of profile 0; a static input is its own profile."""
        shape = tuple(int(d) for d in self._engine.get_tensor_shape(name))
        if -1 not in shape:
            return shape, shape, shape
        pmin, popt, pmax = self._engine.get_tensor_profile_shape(name, 0)
        return tuple(int(d) for d in pmin), tuple(int(d) for d in popt), tuple(int(d) for d in pmax)

    def _bind(self, name: str, shape: tuple[int, ...]) -> _Buffer:
        dims = tuple(int(d) for d in shape)
        if any(d < 0 for d in dims):
            raise ArtifactLoadError(
                f"tensor {name!r} has a data-dependent shape {list(dims)}; the runtime needs static "
                "shapes except batch (NMS in the graph: fixed-size det + det_count)"
            )
        kind = self._engine.get_tensor_dtype(name).name
        if kind not in _DTYPES:
            raise ArtifactLoadError(f"tensor {name!r} has unsupported TensorRT dtype {kind}")
        mem = self._memory()
        host = mem.host_pinned(dims, _DTYPES[kind])
        device = mem.malloc(host.nbytes)
        if not self._context.set_tensor_address(name, device):
            raise ArtifactLoadError(f"TensorRT refused the device address for {name!r}")
        return _Buffer(name, host, device)

    def _mismatch_message(self) -> str:
        built = self.sidecar.tensorrt if self.sidecar else None
        try:
            here_gpu = self._memory().device_name()
        except MtcError:
            here_gpu = "unknown GPU"
        return (
            f"engine was built with TensorRT {built.version if built else '?'} on GPU "
            f"{built.gpu if built else '?'} (sidecar); this machine has TensorRT "
            f"{getattr(self._trt, '__version__', '?')} on GPU {here_gpu}: rebuild it on this device "
            "with mtc-export from the ONNX it came from (engines are tied to TensorRT version and GPU)"
        )

    def _infer(self, batch: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        mem, stream, ev = self._memory(), self._stream, self._events
        n = batch.shape[0]
        if n != self._batch:
            self._set_batch(n)
        host_in = self._input.host[:n]
        np.copyto(host_in, batch)
        mem.event_record(ev[0], stream)
        mem.htod_async(self._input.device, host_in, stream)
        mem.event_record(ev[1], stream)
        if not self._enqueue(n):
            raise BackendError("TensorRT execute_async_v3 failed (see the TensorRT log above)")
        mem.event_record(ev[2], stream)
        views = [b.host[: s[0]] for b, s in zip(self._outputs, self._out_shapes)]
        for b, view in zip(self._outputs, views):
            mem.dtoh_async(view, b.device, stream)
        mem.event_record(ev[3], stream)
        mem.stream_sync(stream)
        timing = {
            "h2d": mem.event_elapsed_ms(ev[0], ev[1]),
            "compute": mem.event_elapsed_ms(ev[1], ev[2]),
            "d2h": mem.event_elapsed_ms(ev[2], ev[3]),
        }
        return {b.name: v.copy() for b, v in zip(self._outputs, views)}, timing

    def _enqueue(self, n: int) -> bool:
        """execute_async_v3, or with the cuda_graph option a CUDA graph of it per batch size:
        the first call at a size enqueues once normally (TensorRT sets up shape-dependent state
        outside the stream; that run produces this call's outputs), then captures the enqueue;
        later calls launch the graph, one launch instead of one per kernel. Valid because the
        device addresses are bound once, at open."""
        mem, stream = self._memory(), self._stream
        handle = mem.stream_handle(stream)
        if not self.options.cuda_graph:
            return bool(self._context.execute_async_v3(handle))
        graphs: dict[int, Any] = self.__dict__.setdefault("_graphs", {})
        if n in graphs:
            mem.graph_launch(graphs[n], stream)
            return True
        if not self._context.execute_async_v3(handle):
            return False
        mem.graph_capture_begin(stream)
        try:
            ok = bool(self._context.execute_async_v3(handle))
        finally:
            graph = mem.graph_capture_end(stream)
        if ok:
            graphs[n] = graph
        return ok

    def _set_batch(self, n: int) -> None:
        shape = (n, *self._input.host.shape[1:])
        if not self._context.set_input_shape(self._input.name, shape):
            spec = self.input_spec
            raise InputMismatchError(
                f"TensorRT rejected input shape {list(shape)}: the engine's profile allows batch "
                f"{spec.batch_min}..{spec.batch_max}; rebuild it with a wider profile"
            )
        shapes = [
            tuple(int(d) for d in self._context.get_tensor_shape(b.name)) for b in self._outputs
        ]
        for b, s in zip(self._outputs, shapes):
            if s[0] > b.host.shape[0] or s[1:] != b.host.shape[1:]:
                raise BackendError(f"output {b.name!r} shape {list(s)} does not fit its buffer")
        self._out_shapes = shapes
        self._batch = n

    def _close(self) -> None:
        # The context and engine must go before the memory they point into.
        for attr in ("_graphs", "_context", "_engine", "_runtime"):
            if hasattr(self, attr):
                delattr(self, attr)
        mem, self._mem = getattr(self, "_mem", None), None
        if mem is not None:
            mem.close()

    def _output_names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self._outputs)

    def _device(self) -> str:
        return f"{self._memory().device_name()} (TensorRT {self._trt.__version__})"

    def versions(self) -> dict[str, str]:
        if not self.is_open:
            return {}
        return {"tensorrt": str(self._trt.__version__), "cuda_bindings": self._memory().name}
