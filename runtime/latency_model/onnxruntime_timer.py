"""ONNX Runtime probe timer (CPU execution provider), with the same graph optimisations the
runtime's onnxruntime backend uses.

Clock: with one intra-op thread, ONNX Runtime runs every kernel on the calling thread, so the
thread's CPU time is the compute time of the batch — and unlike wall time it does not grow when
other processes share the cores (a 2-core machine under load inflates wall times 2-3x and
unevenly). On an idle machine the two agree. With more threads the timer uses wall time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from runtime.backends.onnxruntime import _import_onnxruntime
from runtime.hostinfo import cpu_flags, cpu_name
from runtime.latency_model.timers import ProbeTimer, TimerError, random_input, register_timer


@register_timer("onnxruntime")
class OnnxRuntimeTimer(ProbeTimer):
    precisions = ("fp32",)

    def __init__(self, precision: str = "fp32", threads: int | None = None) -> None:
        super().__init__(precision, threads)
        self._ort: Any = _import_onnxruntime()

    def device(self) -> str:
        return cpu_name()

    def versions(self) -> dict[str, str]:
        return {"onnxruntime": str(self._ort.__version__), "clock": self.clock}

    def channel_block(self) -> int | None:
        return nchwc_block(cpu_flags())

    def prepare(
        self, onnx_bytes: bytes, input_name: str, input_shape: tuple[int, ...]
    ) -> Callable[[], float | None]:
        ort = self._ort
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if self.threads is not None:
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
        try:
            sess = ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # ORT's own pybind error classes
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise TimerError(f"ONNX Runtime cannot load a latency probe: {first}") from None
        inp = sess.get_inputs()[0]
        dtype = "float16" if inp.type == "tensor(float16)" else "float32"
        feed = {inp.name: random_input(input_shape, dtype)}
        names = [o.name for o in sess.get_outputs()]
        if self.clock == "thread_cpu":

            def run_cpu() -> float:
                t0 = time.thread_time()
                sess.run(names, feed)
                return (time.thread_time() - t0) * 1e3

            return run_cpu

        def run() -> None:
            sess.run(names, feed)

        return run

    @property
    def clock(self) -> str:
        return "thread_cpu" if self.threads == 1 else "wall"


def nchwc_block(flags: frozenset[str]) -> int | None:
    """The channel block of ONNX Runtime's x86 NCHWc convolutions (its default graph
    optimisations switch convs to that layout): 16 with AVX-512, 8 with AVX2 / AVX; None
    elsewhere (no NCHWc). Measured here on AVX-512: a 48->40 channel 3x3 conv costs what 48
    does, 24 what 32 does; with the layout pass off the same convs scale smoothly."""
    if "avx512f" in flags:
        return 16
    if flags & {"avx2", "avx"}:
        return 8
    return None
