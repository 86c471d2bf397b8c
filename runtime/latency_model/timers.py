"""Probe timers: one per deploy backend, one file each, behind one small protocol. A timer turns
ONNX bytes into a callable that runs one batch, and reports the device and library versions that
key the table. The repetition policy (warm-up, runs, median) is shared, here."""

from __future__ import annotations

import statistics
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from runtime.errors import MtcError
from runtime.registry import Registry


class TimerError(MtcError):
    """An unknown or unusable probe timer (backend)."""


@dataclass(frozen=True)
class Repeat:
    """Warm-up runs, then at least `min_runs` timed runs and at least `min_seconds` of them (at
    most `max_runs`); the median is the probe's time."""

    warmup: int = 2
    min_runs: int = 5
    min_seconds: float = 0.05
    max_runs: int = 50


def median_ms(run: Callable[[], float | None], repeat: Repeat) -> tuple[float, int]:
    """(median ms, runs). `run` returns its own device time in ms, or None to be timed here."""
    for _ in range(repeat.warmup):
        run()
    times: list[float] = []
    spent = 0.0
    while len(times) < repeat.max_runs and (
        len(times) < repeat.min_runs or spent < repeat.min_seconds
    ):
        t0 = time.perf_counter()
        device_ms = run()
        wall = time.perf_counter() - t0
        spent += wall
        times.append(device_ms if device_ms is not None else wall * 1e3)
    return float(statistics.median(times)), len(times)


class ProbeTimer(ABC):
    """Times ONNX models on one backend. `precision` is what the table will be keyed by."""

    name: ClassVar[str] = ""
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)

    def __init__(self, precision: str = "fp32", threads: int | None = None) -> None:
        if precision not in self.precisions:
            raise TimerError(
                f"the {self.name} timer measures {', '.join(self.precisions)}; got {precision!r}"
            )
        if threads is not None and threads < 1:
            raise TimerError(f"threads must be >= 1, got {threads}")
        self.precision, self.threads = precision, threads

    @abstractmethod
    def device(self) -> str: ...

    @abstractmethod
    def versions(self) -> dict[str, str]: ...

    @property
    def wants_fp16_onnx(self) -> bool:
        """True when the backend takes precision from the ONNX itself (strongly typed)."""
        return False

    def channel_block(self) -> int | None:
        """Channels the backend computes a convolution in at once, where known: a width between
        two multiples costs as much as the next multiple up. None: unknown."""
        return None

    @abstractmethod
    def prepare(
        self, onnx_bytes: bytes, input_name: str, input_shape: tuple[int, ...]
    ) -> Callable[[], float | None]:
        """Load/build the model; return a callable that runs one batch."""

    def time(
        self, onnx_bytes: bytes, input_name: str, input_shape: tuple[int, ...], repeat: Repeat
    ) -> float:
        return median_ms(self.prepare(onnx_bytes, input_name, input_shape), repeat)[0]

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release device resources."""


TIMERS: Registry[type[ProbeTimer]] = Registry("latency backend", TimerError)


def register_timer(name: str) -> Callable[[type[ProbeTimer]], type[ProbeTimer]]:
    def deco(cls: type[ProbeTimer]) -> type[ProbeTimer]:
        TIMERS.register(name, cls)
        cls.name = name
        return cls

    return deco


def _load_builtin() -> None:
    from runtime.latency_model import onnxruntime_timer, tensorrt_timer  # noqa: F401


def list_timers() -> list[str]:
    _load_builtin()
    return TIMERS.names()


def get_timer(name: str) -> type[ProbeTimer]:
    _load_builtin()
    return TIMERS.get(name)


def random_input(shape: tuple[int, ...], dtype: str = "float32", seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)
