"""Device memory for the TensorRT backend behind one tiny adapter.

TensorRT's Python API takes raw device pointers and a stream handle; who allocates them is up to
us. Jetson images often ship pycuda, desktop installs get cuda-python from pip, so both sit behind
`DeviceMemory` and the backend never imports either. Imports happen inside the adapters.
"""

from __future__ import annotations

import ctypes
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import numpy as np

from runtime.backends.base import BackendError, BackendUnavailableError
from runtime.errors import MtcError
from runtime.registry import Registry

INSTALL_HINT = 'pip install "mtc[tensorrt]" (cuda-python; on JetPack 6: "cuda-python>=12.6,<13")'
# Error names users hit most, with what to do about them.
_CUDA_HINTS = {
    "cudaErrorInsufficientDriver": "no NVIDIA driver, or one older than this cuda-python's CUDA; "
    "on JetPack 6 pin cuda-python>=12.6,<13",
    "cudaErrorNoDevice": "no CUDA GPU is visible (check CUDA_VISIBLE_DEVICES, or run the container "
    "with --runtime nvidia)",
    "cudaErrorMemoryAllocation": "out of GPU memory; lower --batch",
}


class CudaError(MtcError):
    """A CUDA runtime call failed; the message carries the CUDA error name."""


class DeviceMemory(ABC):
    """Allocations, one stream's async copies and events. Everything allocated is released by
    close(), so a backend that fails half-way through open() leaks nothing."""

    name: ClassVar[str] = ""

    @abstractmethod
    def malloc(self, nbytes: int) -> int: ...

    @abstractmethod
    def free(self, ptr: int) -> None: ...

    @abstractmethod
    def host_pinned(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray: ...

    @abstractmethod
    def htod_async(self, dst: int, src: np.ndarray, stream: Any) -> None: ...

    @abstractmethod
    def dtoh_async(self, dst: np.ndarray, src: int, stream: Any) -> None: ...

    @abstractmethod
    def stream_create(self) -> Any: ...

    @abstractmethod
    def stream_handle(self, stream: Any) -> int: ...

    @abstractmethod
    def stream_sync(self, stream: Any) -> None: ...

    @abstractmethod
    def event_create(self) -> Any: ...

    @abstractmethod
    def event_record(self, event: Any, stream: Any) -> None: ...

    @abstractmethod
    def event_elapsed_ms(self, start: Any, end: Any) -> float: ...

    @abstractmethod
    def device_name(self) -> str: ...

    @abstractmethod
    def close(self) -> None: ...

    # CUDA graphs (optional: TensorRT backend's cuda_graph option). An adapter without them says so.
    def graph_capture_begin(self, stream: Any) -> None:
        raise BackendError(
            f"CUDA graphs are not available through the {self.name} memory adapter; use "
            "--memory cuda-python, or drop --cuda-graph"
        )

    def graph_capture_end(self, stream: Any) -> Any:
        """End the capture; returns the instantiated graph, released by close()."""
        raise BackendError(f"CUDA graphs are not available through the {self.name} adapter")

    def graph_launch(self, graph: Any, stream: Any) -> None:
        raise BackendError(f"CUDA graphs are not available through the {self.name} adapter")


_M = TypeVar("_M", bound=DeviceMemory)
MEMORY: Registry[type[DeviceMemory]] = Registry("memory adapter", BackendError, also=("auto",))
AUTO_ORDER = ("cuda-python", "pycuda")


def register_memory(name: str) -> Callable[[type[_M]], type[_M]]:
    def deco(cls: type[_M]) -> type[_M]:
        MEMORY.register(name, cls)
        cls.name = name
        return cls

    return deco


def list_memory_adapters() -> list[str]:
    return MEMORY.names()


def create_memory(name: str = "auto") -> DeviceMemory:
    """'auto' tries cuda-python, then pycuda. A missing package moves on; a present package that
    fails (no driver) raises, since the next one would fail the same way."""
    if name != "auto":
        return MEMORY.get(name)()
    for candidate in AUTO_ORDER:
        if candidate in MEMORY:
            try:
                return MEMORY.get(candidate)()
            except BackendUnavailableError:
                continue
    raise BackendUnavailableError(
        f"the tensorrt backend needs CUDA bindings for device memory: {INSTALL_HINT}, or pycuda"
    )


def _import_cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python before the cuda.bindings layout
        except ImportError:
            raise BackendUnavailableError(f"cuda-python is not installed: {INSTALL_HINT}") from None
    return cudart


@register_memory("cuda-python")
class CudaPythonMemory(DeviceMemory):
    """cuda-python's runtime bindings: every call returns (error, *values); each is checked."""

    def __init__(self) -> None:
        self._rt = _import_cudart()
        self._device: list[int] = []
        self._host: list[int] = []
        self._streams: list[Any] = []
        self._events: list[Any] = []
        self._graphs: list[tuple[str, Any]] = []  # (destroy function, handle), execs first
        if self._call("cudaGetDeviceCount") == 0:
            raise CudaError("no CUDA device found: " + _CUDA_HINTS["cudaErrorNoDevice"])

    def _call(self, fn: str, *args: Any) -> Any:
        err, *values = getattr(self._rt, fn)(*args)
        if err != self._rt.cudaError_t.cudaSuccess:
            name = getattr(err, "name", str(err))
            hint = _CUDA_HINTS.get(name)
            raise CudaError(f"CUDA call {fn} failed: {name}" + (f" ({hint})" if hint else ""))
        return values[0] if len(values) == 1 else tuple(values) or None

    def malloc(self, nbytes: int) -> int:
        ptr = int(self._call("cudaMalloc", nbytes))
        self._device.append(ptr)
        return ptr

    def free(self, ptr: int) -> None:
        self._device.remove(ptr)
        self._call("cudaFree", ptr)

    def host_pinned(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        dt = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dt.itemsize
        ptr = int(self._call("cudaMallocHost", nbytes))
        self._host.append(ptr)
        raw = (ctypes.c_uint8 * nbytes).from_address(ptr)
        return np.frombuffer(raw, dtype=dt).reshape(shape)

    def htod_async(self, dst: int, src: np.ndarray, stream: Any) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call("cudaMemcpyAsync", dst, src.ctypes.data, src.nbytes, kind, stream)

    def dtoh_async(self, dst: np.ndarray, src: int, stream: Any) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._call("cudaMemcpyAsync", dst.ctypes.data, src, dst.nbytes, kind, stream)

    def stream_create(self) -> Any:
        stream = self._call("cudaStreamCreate")
        self._streams.append(stream)
        return stream

    def stream_handle(self, stream: Any) -> int:
        return int(stream)

    def stream_sync(self, stream: Any) -> None:
        self._call("cudaStreamSynchronize", stream)

    def event_create(self) -> Any:
        event = self._call("cudaEventCreate")
        self._events.append(event)
        return event

    def event_record(self, event: Any, stream: Any) -> None:
        self._call("cudaEventRecord", event, stream)

    def event_elapsed_ms(self, start: Any, end: Any) -> float:
        return float(self._call("cudaEventElapsedTime", start, end))

    def graph_capture_begin(self, stream: Any) -> None:
        mode = self._rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        self._call("cudaStreamBeginCapture", stream, mode)

    def graph_capture_end(self, stream: Any) -> Any:
        graph = self._call("cudaStreamEndCapture", stream)
        self._graphs.append(("cudaGraphDestroy", graph))
        graph_exec = self._call("cudaGraphInstantiate", graph, 0)
        self._graphs.insert(0, ("cudaGraphExecDestroy", graph_exec))
        return graph_exec

    def graph_launch(self, graph: Any, stream: Any) -> None:
        self._call("cudaGraphLaunch", graph, stream)

    def device_name(self) -> str:
        props = self._call("cudaGetDeviceProperties", self._call("cudaGetDevice"))
        name = props.name
        return (
            name.decode(errors="replace").rstrip("\x00") if isinstance(name, bytes) else str(name)
        )

    def close(self) -> None:
        """Release everything; try all of it and report the first failure afterwards."""
        jobs = list(self._graphs) + [("cudaEventDestroy", e) for e in self._events]
        jobs += [("cudaStreamDestroy", s) for s in self._streams]
        jobs += [("cudaFree", p) for p in self._device] + [("cudaFreeHost", p) for p in self._host]
        self._events, self._streams, self._device, self._host = [], [], [], []
        self._graphs = []
        first: CudaError | None = None
        for fn, handle in jobs:
            try:
                self._call(fn, handle)
            except CudaError as e:
                first = first or e
        if first is not None:
            raise first
