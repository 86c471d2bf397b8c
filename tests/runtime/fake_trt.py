"""A CPU stand-in for exactly the part of TensorRT's Python API that runtime.backends.tensorrt uses,
plus a fake device-memory adapter.

Same names and the semantics that our code depends on: -1 marks dynamic dims; profile min/opt/max
come from get_tensor_profile_shape; set_input_shape returns False outside the profile;
execute_async_v3 fails unless every IO tensor has an address and every input a full shape;
deserialize_cuda_engine returns None for a plan built by another TensorRT version. The "engine"
runs a small numpy function named in the plan, reading and writing fake device memory by address.

It tests our buffer sizing, per-batch shapes, profile handling, timing plumbing and error paths.
It proves nothing about TensorRT itself (tests/runtime/test_tensorrt_gpu.py does, on a GPU).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from runtime.backends.cuda_memory import DeviceMemory

__version__ = "10.3.0"
PLAN_MAGIC = b"FAKETRT1"
DEVICE: dict[int, np.ndarray] = {}  # fake device memory: address -> uint8 bytes


class _Member:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


class TensorIOMode:
    INPUT = _Member("INPUT")
    OUTPUT = _Member("OUTPUT")


class DataType:
    FLOAT = _Member("FLOAT")
    HALF = _Member("HALF")
    INT32 = _Member("INT32")
    UINT8 = _Member("UINT8")


_NP_TO_TRT = {
    "float32": DataType.FLOAT,
    "float16": DataType.HALF,
    "int32": DataType.INT32,
    "uint8": DataType.UINT8,
}


class Logger:
    WARNING = _Member("WARNING")

    def __init__(self, severity: Any = None) -> None:
        self.severity = severity


def _standin(x: np.ndarray, rows: int) -> dict[str, np.ndarray]:
    """The stand-in network: fixed detections, masks = channel > 0."""
    b = x.shape[0]
    det = np.zeros((b, rows, 6), np.float32)
    det[:, 0] = [2, 2, 10, 10, 0.9, 0]
    det[:, 1] = [3, 3, 11, 11, 0.8, 0]  # overlaps row 0: NMS removes it
    det[:, 2] = [20, 4, 30, 12, 0.7, 0]
    return {
        "det": det,
        "drivable": (x[:, 0] > 0).astype(np.uint8),
        "lane": (x[:, 1] > 0).astype(np.uint8),
    }


FUNCTIONS: dict[str, Callable[[np.ndarray, int], dict[str, np.ndarray]]] = {"standin": _standin}


def make_plan(
    input_shape: tuple[int, ...],
    profile: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]],
    rows: int = 8,
    version: str = __version__,
    function: str = "standin",
) -> bytes:
    """Serialise a fake engine: input `images` (shape with -1 for dynamic batch) and the stand-in
    outputs det [B, rows, 6] float32, drivable / lane [B, H, W] uint8."""
    h, w = input_shape[2:]
    spec = {
        "version": version,
        "function": function,
        "rows": rows,
        "input": {
            "name": "images",
            "shape": list(input_shape),
            "dtype": "float32",
            "profile": [list(s) for s in profile],
        },
        "outputs": [
            {"name": "det", "shape": [-1, rows, 6], "dtype": "float32"},
            {"name": "drivable", "shape": [-1, h, w], "dtype": "uint8"},
            {"name": "lane", "shape": [-1, h, w], "dtype": "uint8"},
        ],
    }
    return PLAN_MAGIC + json.dumps(spec).encode()


class Runtime:
    def __init__(self, logger: Logger) -> None:
        self.logger = logger

    def deserialize_cuda_engine(self, plan: bytes) -> ICudaEngine | None:
        if not plan.startswith(PLAN_MAGIC):
            return None
        spec = json.loads(plan[len(PLAN_MAGIC) :])
        if spec["version"] != __version__:
            return None  # TensorRT logs "serialized with a different version" and returns None
        return ICudaEngine(spec)


class ICudaEngine:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self._tensors = [spec["input"], *spec["outputs"]]
        self.contexts: list[IExecutionContext] = []

    @property
    def num_io_tensors(self) -> int:
        return len(self._tensors)

    def _tensor(self, name: str) -> dict[str, Any]:
        return next(t for t in self._tensors if t["name"] == name)

    def get_tensor_name(self, index: int) -> str:
        return self._tensors[index]["name"]

    def get_tensor_mode(self, name: str) -> _Member:
        return TensorIOMode.INPUT if name == self.spec["input"]["name"] else TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name: str) -> _Member:
        return _NP_TO_TRT[self._tensor(name)["dtype"]]

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._tensor(name)["shape"])

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[tuple[int, ...]]:
        if name != self.spec["input"]["name"] or profile_index != 0:
            raise RuntimeError(f"no profile {profile_index} for {name}")
        return [tuple(s) for s in self.spec["input"]["profile"]]

    def create_execution_context(self) -> IExecutionContext:
        ctx = IExecutionContext(self)
        self.contexts.append(ctx)
        return ctx


class IExecutionContext:
    def __init__(self, engine: ICudaEngine) -> None:
        self.engine = engine
        self.input_shapes: list[tuple[int, ...]] = []  # every set_input_shape call, for tests
        self.addresses: dict[str, int] = {}
        self._shape: tuple[int, ...] | None = None
        self.executions = 0

    def set_input_shape(self, name: str, shape: Any) -> bool:
        shape = tuple(int(d) for d in shape)
        self.input_shapes.append(shape)
        pmin, _, pmax = self.engine.get_tensor_profile_shape(name, 0)
        ok = len(shape) == len(pmin) and all(lo <= d <= hi for lo, d, hi in zip(pmin, shape, pmax))
        if ok:
            self._shape = shape
        return ok

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        declared = self.engine.get_tensor_shape(name)
        if self._shape is None:
            return declared
        if name == self.engine.spec["input"]["name"]:
            return self._shape
        return (self._shape[0], *declared[1:])

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self.addresses[name] = int(ptr)
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        names = [t["name"] for t in self.engine._tensors]
        if self._shape is None or any(n not in self.addresses for n in names):
            return False  # TensorRT: "not all input shapes/addresses specified"
        inp = self.engine.spec["input"]
        x = _read(self.addresses[inp["name"]], self._shape, inp["dtype"])
        outs = FUNCTIONS[self.engine.spec["function"]](x, self.engine.spec["rows"])
        for name, arr in outs.items():
            _write(self.addresses[name], arr)
        self.executions += 1
        return True


def _read(ptr: int, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return DEVICE[ptr][:nbytes].view(dtype).reshape(shape).copy()


def _write(ptr: int, arr: np.ndarray) -> None:
    raw = np.ascontiguousarray(arr).view(np.uint8).ravel()
    if raw.size > DEVICE[ptr].size:
        raise RuntimeError(
            f"fake GPU: write of {raw.size} B overruns a {DEVICE[ptr].size} B buffer"
        )
    DEVICE[ptr][: raw.size] = raw


class FakeMemory(DeviceMemory):
    """Host arrays standing in for device allocations, keyed by fake addresses."""

    name = "fake"

    def __init__(self) -> None:
        self.device_bytes: dict[int, int] = {}  # address -> size, live allocations
        self.pinned: list[np.ndarray] = []
        self.copies: list[tuple[str, int]] = []  # (direction, bytes)
        self.closed = False
        self._next = 0x10000

    def malloc(self, nbytes: int) -> int:
        ptr, self._next = self._next, self._next + ((nbytes + 255) // 256 + 1) * 256
        DEVICE[ptr] = np.zeros(nbytes, np.uint8)
        self.device_bytes[ptr] = nbytes
        return ptr

    def free(self, ptr: int) -> None:
        del DEVICE[ptr], self.device_bytes[ptr]

    def host_pinned(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        arr = np.zeros(shape, dtype)
        self.pinned.append(arr)
        return arr

    def htod_async(self, dst: int, src: np.ndarray, stream: Any) -> None:
        if not src.flags.c_contiguous:
            raise RuntimeError("fake GPU: async copies need contiguous host memory")
        _write(dst, src)
        self.copies.append(("h2d", src.nbytes))

    def dtoh_async(self, dst: np.ndarray, src: int, stream: Any) -> None:
        dst.reshape(-1).view(np.uint8)[:] = DEVICE[src][: dst.nbytes]
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
        return "Fake GPU"

    def close(self) -> None:
        for ptr in list(self.device_bytes):
            self.free(ptr)
        self.pinned.clear()
        self.closed = True
