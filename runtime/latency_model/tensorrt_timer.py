"""TensorRT probe timer: each probe is built into an engine on this GPU (FP16 as `mtc-export
--engine fp16` builds it: the FP16 builder flag on 10.x, a strongly typed FP16 ONNX on 11.x) and
timed by the runtime's tensorrt backend, whose CUDA events give the device compute time per batch.
Needs a GPU, TensorRT and cuda-python; on CPU machines it is exercised through a fake."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from runtime.backends.base import BackendOptions
from runtime.backends.tensorrt import TensorRTBackend, _import_tensorrt
from runtime.latency_model.timers import ProbeTimer, Repeat, random_input, register_timer
from runtime.tensorrt.builder import build_serialized_engine, fp16_path_for
from runtime.tensorrt.targets import FP16_STRONGLY_TYPED


@register_timer("tensorrt")
class TensorRTTimer(ProbeTimer):
    precisions = ("fp16", "fp32")

    def __init__(self, precision: str = "fp16", threads: int | None = None) -> None:
        super().__init__(precision, threads)
        self._trt = _import_tensorrt()
        self._tmp = tempfile.TemporaryDirectory(prefix="mtc-trt-probes-")
        self._open: list[TensorRTBackend] = []
        self._device_name: str | None = None

    @property
    def wants_fp16_onnx(self) -> bool:
        return self.precision == "fp16" and fp16_path_for(self._trt) == FP16_STRONGLY_TYPED

    def device(self) -> str:
        if self._device_name is None:
            from runtime.backends.cuda_memory import create_memory

            mem = create_memory("auto")
            try:
                self._device_name = mem.device_name()
            finally:
                mem.close()
        return self._device_name

    def versions(self) -> dict[str, str]:
        return {"tensorrt": str(self._trt.__version__)}

    def prepare(
        self, onnx_bytes: bytes, input_name: str, input_shape: tuple[int, ...]
    ) -> Callable[[], float]:
        shape = tuple(int(d) for d in input_shape)
        plan, _info = build_serialized_engine(
            onnx_bytes,
            precision=self.precision,
            input_shapes={input_name: (shape, shape, shape)},
            trt=self._trt,
        )
        path = Path(self._tmp.name) / "probe.engine"
        path.write_bytes(plan)
        backend = TensorRTBackend(path, None, BackendOptions()).open()
        self._open.append(backend)
        batch = random_input(shape, backend.input_spec.dtype)

        def run() -> float:
            backend.infer(batch)
            return float(backend.last_timing["compute"])

        return run

    def time(
        self, onnx_bytes: bytes, input_name: str, input_shape: tuple[int, ...], repeat: Repeat
    ) -> float:
        """One probe: build, time, and free its engine and buffers before the next one."""
        try:
            return super().time(onnx_bytes, input_name, input_shape, repeat)
        finally:
            self._release()

    def _release(self) -> None:
        while self._open:
            self._open.pop().close()

    def close(self) -> None:
        self._release()
        self._tmp.cleanup()
