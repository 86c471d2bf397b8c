"""What `runtime.run` takes (`RunConfig`: every mtc-run flag is a field) and gives back
(`RunResult`; `RunInterrupted` on Ctrl-C). Re-exported by runtime.pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from runtime.errors import MtcError
from runtime.latency import LatencyReport
from runtime.postprocess import FrameResult
from runtime.sidecar import DeployThresholds, Sidecar


class RunConfigError(MtcError):
    """A run option is out of range or does not fit the artifact."""


@dataclass(frozen=True)
class RunConfig:
    batch: int | None = None  # frames per inference; None: the number of sources (1 for one)
    target_fps: float = 30.0
    warmup: int = 2  # batches run (and discarded) on the first batch before measuring
    max_frames: int | None = None
    save: str | None = None  # overlays: a folder, a .mp4 file, or a pattern with {camera}
    report: str | None = None  # latency JSON path; .md and .png are written beside it
    progress: bool = True
    keep_results: bool = True  # False for long runs: masks of every frame add up
    # Deploy thresholds; None = the sidecar's `det.deploy` (runtime.spec.DEPLOY_* when absent).
    conf: float | None = None
    iou: float | None = None
    max_det: int | None = None
    topk: int | None = None
    overlap: bool = True  # read+preprocess | infer | postprocess+draw on three threads
    # Batches that may wait between two stages (bounds memory). None: 2 for a file (throughput),
    # 1 for a live source (every queued batch is a batch of older frames).
    queue_depth: int | None = None
    live_buffer: int | None = None  # frames a live source may queue (None: 2 x batch)
    stall_timeout: float = 5.0  # s a live source may deliver nothing before the run stops
    max_skew_ms: float = 50.0  # several live sources: capture-time spread allowed in one batch

    def __post_init__(self) -> None:
        checks = [
            ("batch", self.batch is None or self.batch >= 1, ">= 1"),
            ("target_fps", self.target_fps > 0, "> 0"),
            ("warmup", self.warmup >= 0, ">= 0"),
            ("max_frames", self.max_frames is None or self.max_frames >= 1, ">= 1"),
            ("conf", self.conf is None or 0.0 < self.conf <= 1.0, "in (0, 1]"),
            ("iou", self.iou is None or 0.0 < self.iou <= 1.0, "in (0, 1]"),
            ("max_det", self.max_det is None or self.max_det >= 1, ">= 1"),
            ("topk", self.topk is None or self.topk >= 1, ">= 1"),
            ("queue_depth", self.queue_depth is None or self.queue_depth >= 1, ">= 1"),
            ("live_buffer", self.live_buffer is None or self.live_buffer >= 1, ">= 1"),
            ("stall_timeout", self.stall_timeout > 0, "> 0 seconds"),
            ("max_skew_ms", self.max_skew_ms > 0, "> 0 ms"),
        ]
        for name, ok, rule in checks:
            if not ok:
                flag = "--" + name.replace("_", "-")
                got = getattr(self, name)
                raise RunConfigError(f"{name} must be {rule} ({flag} in mtc-run), got {got!r}")

    def thresholds(self, sidecar: Sidecar) -> DeployThresholds:
        """The sidecar's deploy thresholds with this run's overrides applied."""
        base = sidecar.det.deploy if sidecar.det is not None else DeployThresholds()
        return DeployThresholds(
            conf_thres=base.conf_thres if self.conf is None else self.conf,
            iou_thres=base.iou_thres if self.iou is None else self.iou,
            max_det=base.max_det if self.max_det is None else self.max_det,
            topk=base.topk if self.topk is None else self.topk,
        )


@dataclass
class RunResult:
    results: list[FrameResult]
    report: LatencyReport
    report_files: list[Path] = field(default_factory=list)
    overlays: Path | None = None  # the first camera's (the only one with one source)
    overlays_by_camera: list[Path] = field(default_factory=list)

    def by_camera(self, camera: int) -> list[FrameResult]:
        """The kept results of one source (its index in `sources`), in order."""
        return [r for r in self.results if r.camera == camera]


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during run(); `.result` holds what was done, and the partial report is written."""

    def __init__(self, result: RunResult) -> None:
        super().__init__("interrupted")
        self.result = result
