"""The backend protocol and the strict backend registry.

One small base class owns state (open/closed) and input checks, so each backend only writes
`_open`, `_close` and `_infer`. A short batch below the artifact's minimum batch is padded here,
once, for every backend (an engine profile or an ONNX with a fixed batch of 4 both need it).
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from runtime.errors import MtcError
from runtime.registry import Registry
from runtime.sidecar import Sidecar


class BackendError(MtcError):
    """A backend cannot be created, opened or run as asked."""


class UnknownBackendError(BackendError):
    """No backend registered under the requested name."""


class DuplicateBackendError(BackendError):
    """Two backends claimed the same name or the same default format."""


class BackendUnavailableError(BackendError):
    """The backend's Python package (onnxruntime, tensorrt, cuda-python) is not installed."""


class ArtifactLoadError(BackendError):
    """The artifact exists but the backend cannot load it (corrupt, wrong format)."""


class BackendStateError(BackendError):
    """infer() on a backend that is not open, or open() twice."""


class InputMismatchError(BackendError):
    """The batch handed to infer() does not fit the artifact's input."""


@dataclass(frozen=True)
class BackendOptions:
    """Backend-specific knobs; a backend rejects the ones that do not apply to it."""

    providers: tuple[str, ...] | None = None  # onnxruntime: cpu, cuda, tensorrt (in order)
    memory: str = "auto"  # tensorrt: auto, cuda-python, pycuda
    threads: int | None = None  # onnxruntime: intra-op threads (None = ONNX Runtime's default)
    cuda_graph: bool = False  # tensorrt: replay the enqueue as a CUDA graph (one per batch size)


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[int, ...]  # -1 = dynamic (batch)
    dtype: str
    batch_min: int = 1
    batch_opt: int = 1
    batch_max: int | None = None  # None = any batch

    def check(self, batch: Any) -> int:
        """Return the batch size or raise saying what was received and what fits."""
        want = f"{self.dtype} {_fmt_shape(self.shape)}"
        if not isinstance(batch, np.ndarray):
            raise InputMismatchError(f"infer() takes a numpy array {want}, got {type(batch)}")
        if batch.dtype != np.dtype(self.dtype):
            raise InputMismatchError(
                f"input dtype is {batch.dtype}, expected {want}; build batches with "
                "runtime.preprocess.Preprocessor or cast with .astype()"
            )
        fixed_ok = all(w in (-1, g) for w, g in zip(self.shape[1:], batch.shape[1:]))
        if batch.ndim != len(self.shape) or not fixed_ok:
            raise InputMismatchError(
                f"input shape is {list(batch.shape)}, expected {want} for {self.name!r}; "
                "letterbox frames to the sidecar's preprocess.input_hw"
            )
        n = int(batch.shape[0])
        top = "any" if self.batch_max is None else str(self.batch_max)
        if n < 1 or (self.batch_max is not None and n > self.batch_max):
            raise InputMismatchError(
                f"batch of {n} is outside what the artifact accepts (1..{top}); use --batch "
                f"{self.batch_opt} or rebuild it with a larger max batch"
            )
        return n


_B = TypeVar("_B", bound="Backend")


class Backend(ABC):
    """Runs one artifact. Use as a context manager, or open() ... close()."""

    name: ClassVar[str] = ""
    formats: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        path: str | os.PathLike[str],
        sidecar: Sidecar | None = None,
        options: BackendOptions | None = None,
    ) -> None:
        self.path = Path(path)
        self.sidecar = sidecar
        self.options = options or BackendOptions()
        self.last_timing: dict[str, float] = {}
        self._spec: InputSpec | None = None
        self._pad_buf: np.ndarray | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self._spec is not None

    def open(self: _B) -> _B:
        if self.is_open:
            raise BackendStateError(f"{self.name} backend for {self.path.name} is already open")
        self._spec = self._open()
        return self

    def close(self) -> None:
        if self.is_open:
            self._close()
            self._spec = None
            self._pad_buf = None

    def __enter__(self: _B) -> _B:
        return self if self.is_open else self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- description -----------------------------------------------------------------------------
    @property
    def input_spec(self) -> InputSpec:
        return self._require_open()

    @property
    def output_names(self) -> tuple[str, ...]:
        self._require_open()
        return self._output_names()

    @property
    def device(self) -> str:
        """Human-readable device, e.g. 'cpu (CPUExecutionProvider)' or a GPU name."""
        return self._device() if self.is_open else "not open"

    def versions(self) -> dict[str, str]:
        """Versions of the libraries doing the work, for reports."""
        return {}

    # -- inference -------------------------------------------------------------------------------
    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run one batch; outputs are fresh arrays (safe to keep). Timings in `last_timing` (ms):
        'infer' = host wall time of this call, plus what the backend measures itself."""
        spec = self._require_open()
        n = spec.check(batch)
        start = time.perf_counter()
        feed = self._pad(batch, spec) if n < spec.batch_min else batch
        outputs, timing = self._infer(feed)
        if feed is not batch:
            outputs = {k: v[:n] for k, v in outputs.items()}
        timing["infer"] = (time.perf_counter() - start) * 1e3
        self.last_timing = timing
        return outputs

    def _pad(self, batch: np.ndarray, spec: InputSpec) -> np.ndarray:
        if self._pad_buf is None:
            self._pad_buf = np.zeros((spec.batch_min, *batch.shape[1:]), dtype=batch.dtype)
        n = batch.shape[0]
        self._pad_buf[:n] = batch
        self._pad_buf[n:] = 0
        return self._pad_buf

    def _require_open(self) -> InputSpec:
        if self._spec is None:
            raise BackendStateError(
                f"{self.name} backend for {self.path.name} is not open; use it as a context "
                "manager or call open() first"
            )
        return self._spec

    @abstractmethod
    def _open(self) -> InputSpec: ...

    @abstractmethod
    def _close(self) -> None: ...

    @abstractmethod
    def _infer(self, batch: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, float]]: ...

    @abstractmethod
    def _output_names(self) -> tuple[str, ...]: ...

    @abstractmethod
    def _device(self) -> str: ...


# -- registry ------------------------------------------------------------------------------------
BACKENDS: Registry[type[Backend]] = Registry(
    "backend", UnknownBackendError, DuplicateBackendError, also=("auto",)
)
# artifact format -> the backend `backend="auto"` picks for it
FORMAT_DEFAULTS: Registry[str] = Registry(
    "artifact format",
    UnknownBackendError,
    DuplicateBackendError,
    listed="formats with a backend",
    unknown="no backend runs {name} artifacts",
)


def register_backend(
    name: str, formats: tuple[str, ...], default_for: tuple[str, ...] = ()
) -> Callable[[type[_B]], type[_B]]:
    """Class decorator. `formats`: artifact formats the backend runs; `default_for`: formats for
    which `backend="auto"` picks it."""

    def deco(cls: type[_B]) -> type[_B]:
        for fmt in default_for:  # all claims checked before any is made
            FORMAT_DEFAULTS.check_free(fmt, f"backend {name!r}")
        BACKENDS.register(name, cls)
        for fmt in default_for:
            FORMAT_DEFAULTS.register(fmt, name)
        cls.name, cls.formats = name, formats
        return cls

    return deco


def list_backends() -> list[str]:
    return BACKENDS.names()


def get_backend(name: str) -> type[Backend]:
    return BACKENDS.get(name)


def default_backend(fmt: str) -> str:
    return FORMAT_DEFAULTS.get(fmt)


def _fmt_shape(shape: tuple[int, ...]) -> str:
    return "[" + ",".join("B" if d == -1 else str(d) for d in shape) + "]"
