"""pycuda adapter: many Jetson images ship pycuda but not cuda-python.

It retains the device's primary context, the one TensorRT's runtime API uses, so pointers from
here are valid inside TensorRT without a second context.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from runtime.backends.base import BackendUnavailableError
from runtime.backends.cuda_memory import CudaError, DeviceMemory, register_memory


def _import_pycuda() -> Any:
    try:
        import pycuda.driver as cuda
    except ImportError:
        raise BackendUnavailableError(
            "pycuda is not installed (it compiles against the CUDA toolkit; JetPack images often "
            'have it); or use cuda-python: pip install "mtc[tensorrt]"'
        ) from None
    return cuda


@register_memory("pycuda")
class PyCudaMemory(DeviceMemory):
    def __init__(self) -> None:
        self._cuda = _import_pycuda()
        self._allocs: dict[int, Any] = {}
        with self._guard("cuInit"):
            self._cuda.init()
            if self._cuda.Device.count() == 0:
                raise CudaError("no CUDA device found (check CUDA_VISIBLE_DEVICES)")
            self._dev = self._cuda.Device(0)
            self._ctx = self._dev.retain_primary_context()
            self._ctx.push()

    @contextlib.contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        try:
            yield
        except self._cuda.Error as e:
            raise CudaError(f"pycuda {what} failed: {e}") from None

    def malloc(self, nbytes: int) -> int:
        with self._guard("mem_alloc"):
            alloc = self._cuda.mem_alloc(nbytes)
        self._allocs[int(alloc)] = alloc
        return int(alloc)

    def free(self, ptr: int) -> None:
        self._allocs.pop(ptr).free()

    def host_pinned(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        with self._guard("pagelocked_empty"):
            return self._cuda.pagelocked_empty(shape, np.dtype(dtype))

    def htod_async(self, dst: int, src: np.ndarray, stream: Any) -> None:
        with self._guard("memcpy_htod_async"):
            self._cuda.memcpy_htod_async(dst, src, stream)

    def dtoh_async(self, dst: np.ndarray, src: int, stream: Any) -> None:
        with self._guard("memcpy_dtoh_async"):
            self._cuda.memcpy_dtoh_async(dst, src, stream)

    def stream_create(self) -> Any:
        return self._cuda.Stream()

    def stream_handle(self, stream: Any) -> int:
        return int(stream.handle)

    def stream_sync(self, stream: Any) -> None:
        with self._guard("Stream.synchronize"):
            stream.synchronize()

    def event_create(self) -> Any:
        return self._cuda.Event()

    def event_record(self, event: Any, stream: Any) -> None:
        event.record(stream)

    def event_elapsed_ms(self, start: Any, end: Any) -> float:
        return float(end.time_since(start))

    def device_name(self) -> str:
        return str(self._dev.name())

    def close(self) -> None:
        for alloc in self._allocs.values():
            alloc.free()
        self._allocs.clear()
        if getattr(self, "_ctx", None) is not None:
            self._ctx.pop()
            self._ctx.detach()
            self._ctx = None
