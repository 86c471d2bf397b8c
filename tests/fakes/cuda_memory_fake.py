"""The runtime's device-memory adapter over the fake GPU, and one call that installs the whole
fake (TensorRT module + memory) for a test.

`FakeMemory` implements `runtime.backends.cuda_memory.DeviceMemory` with host numpy buffers
addressed by integer pointers (`tensorrt_fake.FakeGpu`), so the TensorRT backend's buffer sizing,
copies, events and release run unchanged on CPU. Events time host wall clock: a plumbing check,
never a device time.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tensorrt_fake import FakeGpu, make_fake_tensorrt

from runtime.backends import cuda_memory
from runtime.backends.cuda_memory import DeviceMemory


class FakeMemory(DeviceMemory):
    """Host arrays standing in for device allocations on `gpu`."""

    name = "fake"
    gpu: FakeGpu = FakeGpu()

    def __init__(self) -> None:
        self.device_bytes: dict[int, int] = {}  # address -> size, live allocations
        self.pinned: list[np.ndarray] = []
        self.copies: list[tuple[str, int]] = []  # (direction, bytes)
        self.closed = False

    def malloc(self, nbytes: int) -> int:
        ptr = self.gpu.malloc(nbytes)
        self.device_bytes[ptr] = nbytes
        return ptr

    def free(self, ptr: int) -> None:
        self.gpu.free(ptr)
        del self.device_bytes[ptr]

    def host_pinned(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        arr = np.zeros(shape, dtype)
        self.pinned.append(arr)
        return arr

    def htod_async(self, dst: int, src: np.ndarray, stream: Any) -> None:
        if not src.flags.c_contiguous:
            raise RuntimeError("fake GPU: async copies need contiguous host memory")
        self.gpu.view(dst, src.nbytes)[:] = src.reshape(-1).view(np.uint8)
        self.copies.append(("h2d", src.nbytes))

    def dtoh_async(self, dst: np.ndarray, src: int, stream: Any) -> None:
        dst.reshape(-1).view(np.uint8)[:] = self.gpu.view(src, dst.nbytes)
        self.copies.append(("d2h", dst.nbytes))

    def stream_create(self) -> Any:
        return {"stream": True}

    def stream_handle(self, stream: Any) -> int:
        return 1234

    def stream_sync(self, stream: Any) -> None:
        return None

    def event_create(self) -> Any:
        return {"t": None}

    def event_record(self, event: Any, stream: Any) -> None:
        event["t"] = time.perf_counter()

    def event_elapsed_ms(self, start: Any, end: Any) -> float:
        return (end["t"] - start["t"]) * 1e3

    def device_name(self) -> str:
        return self.gpu.name

    def close(self) -> None:
        for ptr in list(self.device_bytes):
            self.free(ptr)
        self.pinned.clear()
        self.closed = True


@dataclass
class FakeInstall:
    trt: Any  # the fake `tensorrt` module
    gpu: FakeGpu
    memories: list[FakeMemory] = field(default_factory=list)  # adapters the code under test made


def install_fake_tensorrt(
    monkeypatch: Any, version: str = "10.3.0.30", gpu: FakeGpu | None = None, **knobs: Any
) -> FakeInstall:
    """`import tensorrt` gets the fake, and the runtime's `create_memory("auto")` a FakeMemory
    on the same fake GPU (so the export's GPU name query and the backend both see it)."""
    gpu = gpu or FakeGpu()
    inst = FakeInstall(make_fake_tensorrt(version, gpu=gpu, **knobs), gpu)

    class Memory(FakeMemory):
        def __init__(self) -> None:
            super().__init__()
            inst.memories.append(self)

    Memory.gpu = gpu
    monkeypatch.setitem(sys.modules, "tensorrt", inst.trt)
    monkeypatch.setitem(cuda_memory.MEMORY._entries, "fake", Memory)  # gone after the test
    monkeypatch.setattr(cuda_memory, "AUTO_ORDER", ("fake",))
    return inst
