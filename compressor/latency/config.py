"""Where latency is measured, for the latency target and for the teacher-vs-student report."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from runtime.errors import MtcError

BACKENDS = ("onnxruntime", "tensorrt")
PRECISIONS = ("fp32", "fp16")


class LatencyConfigError(MtcError):
    """A latency option outside its valid range."""


@dataclass(frozen=True)
class LatencyConfig:
    """backend / precision / device: what the table must have been measured on (precision None =
    the backend's default: fp32 for onnxruntime, fp16 for tensorrt; device None = any for a given
    table, this machine for one measured here). threads: ONNX Runtime intra-op threads (1 = the
    stable single-thread CPU clock; 0 = ONNX Runtime's default). batch: the batch the table and
    measurements use. measure: time teacher and student side by side after compressing (where
    the backend is on this machine). rounds: interleaved rounds of that measurement. cache_dir:
    where tables measured here are cached (None: $MTC_CACHE_DIR or ~/.cache/mtc)."""

    backend: str = "onnxruntime"
    precision: str | None = None
    device: str | None = None
    threads: int = 1
    batch: int = 1
    measure: bool = True
    rounds: int = 7
    cache_dir: str | None = None  # where tables measured here are kept (None: ~/.cache/mtc)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise LatencyConfigError(
                f"latency backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}"
            )
        if self.precision is not None and self.precision not in PRECISIONS:
            raise LatencyConfigError(
                f"latency precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )
        for name, low in (("threads", 0), ("batch", 1), ("rounds", 1)):
            if getattr(self, name) < low:
                raise LatencyConfigError(
                    f"latency {name} must be >= {low}, got {getattr(self, name)}"
                )

    @property
    def resolved_precision(self) -> str:
        return self.precision or ("fp16" if self.backend == "tensorrt" else "fp32")

    @property
    def ort_threads(self) -> int | None:
        return self.threads or None

    def to_dict(self) -> dict:
        return asdict(self)
