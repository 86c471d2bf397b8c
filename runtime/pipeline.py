"""frames -> preprocess -> backend -> postprocess -> results + latency report.

`load_artifact` turns a path into an open backend (sidecar first: it decides the backend and is
checked against what the artifact really declares). `run` drives a source through it in batches,
warms up explicitly, times every stage, writes overlays and the report, and on Ctrl-C still writes
the partial report before re-raising as `RunInterrupted` (a KeyboardInterrupt carrying the result).

Stages: read + preprocess (producer) -> infer -> postprocess + draw (consumer). By default they
overlap (`runtime.overlap`: three threads, bounded queues, round-robin preprocess buffers); with
`overlap=False` (`--no-overlap`) they run one after the other on the calling thread. Either way a
live source is read on its own thread and drops its oldest frames when behind (`runtime.feed`).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from itertools import chain, islice
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from runtime.backends import Backend, BackendOptions, default_backend, get_backend
from runtime.errors import MtcError
from runtime.feed import Captured, FrameFeed
from runtime.geometry import Letterbox
from runtime.hostinfo import NOT_AVAILABLE, jetson_power_mode
from runtime.latency import LatencyRecorder, LatencyReport, RunInfo
from runtime.overlap import run_overlapped
from runtime.overlay import OverlaySink, draw_overlay, open_sink
from runtime.postprocess import FrameResult, Postprocessor
from runtime.preprocess import Preprocessor
from runtime.sidecar import SUFFIX_FORMATS, DeployThresholds, Sidecar, read_sidecar
from runtime.sources import Source, SourceSpec, open_source


class ArtifactNotFoundError(MtcError):
    """The artifact path does not exist."""


class RunConfigError(MtcError):
    """A run option is out of range or does not fit the artifact."""


@dataclass(frozen=True)
class RunConfig:
    batch: int = 1
    target_fps: float = 30.0
    warmup: int = 2  # batches run (and discarded) on the first batch before measuring
    max_frames: int | None = None
    save: str | None = None  # overlays: a folder, or a .mp4 file
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

    def __post_init__(self) -> None:
        checks = [
            ("batch", self.batch >= 1, ">= 1"),
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
    overlays: Path | None = None


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during run(); `.result` holds what was done, and the partial report is written."""

    def __init__(self, result: RunResult) -> None:
        super().__init__("interrupted")
        self.result = result


def load_artifact(
    path: str | os.PathLike[str],
    backend: str = "auto",
    providers: Sequence[str] | str | None = None,
    verify_hash: bool = True,
    memory: str = "auto",
    threads: int | None = None,
    cuda_graph: bool = False,
) -> Backend:
    """Open an `.onnx` / `.engine` with the backend its sidecar calls for (or the one named)."""
    p = Path(path)
    if not p.is_file():
        raise ArtifactNotFoundError(
            f"artifact {p} does not exist; pass the .onnx or .engine file that mtc-export wrote"
        )
    sc = read_sidecar(p, verify_hash=verify_hash)
    by_suffix = SUFFIX_FORMATS.get(p.suffix.lower())
    if by_suffix is not None and by_suffix != sc.format:
        raise RunConfigError(f"{p.name} looks like {by_suffix} but its sidecar says {sc.format!r}")
    cls = get_backend(default_backend(sc.format) if backend == "auto" else backend)
    if sc.format not in cls.formats:
        raise RunConfigError(
            f"backend {cls.name!r} runs {', '.join(cls.formats)} artifacts and {p.name} is "
            f"{sc.format!r}; use --backend auto (for ONNX on TensorRT: --providers tensorrt)"
        )
    if isinstance(providers, str):
        providers = [s.strip() for s in providers.split(",") if s.strip()]
    options = BackendOptions(tuple(providers) if providers else None, memory, threads, cuda_graph)
    be = cls(p, sc, options).open()
    try:
        _check_input(be, sc)
    except BaseException:
        be.close()
        raise
    return be


def _check_input(be: Backend, sc: Sidecar) -> None:
    spec = be.input_spec
    ours = (spec.name, tuple(spec.shape[1:]), spec.dtype)
    theirs = (sc.input.name, tuple(sc.input.shape[1:]), sc.input.dtype)
    if ours != theirs:
        raise RunConfigError(
            f"{be.path.name} declares input {ours} but its sidecar says {theirs}; re-export the pair"
        )


def run(
    artifact_or_backend: str | os.PathLike[str] | Backend,
    frames: SourceSpec,
    config: RunConfig | None = None,
    **overrides: Any,
) -> RunResult:
    """Run frames through an artifact. `overrides` are RunConfig fields (`batch=4`, `save=...`)."""
    unknown = set(overrides) - {f.name for f in fields(RunConfig)}
    if unknown:
        raise RunConfigError(
            f"unknown run option {sorted(unknown)[0]!r}; valid: "
            f"{', '.join(f.name for f in fields(RunConfig))}"
        )
    cfg = replace(config or RunConfig(), **overrides)
    if isinstance(artifact_or_backend, Backend):
        be, opened_here = artifact_or_backend, not artifact_or_backend.is_open
    else:
        be, opened_here = load_artifact(artifact_or_backend), True
    try:
        if not be.is_open:
            be.open()
        with open_source(frames) as source:
            return _Runner(be, source, cfg).run()
    finally:
        if opened_here:
            be.close()


@dataclass(eq=False)
class _Batch:
    """One batch on its way through the stages."""

    frames: list[Captured]
    tensor: np.ndarray | None  # a view of one preprocessor slot's buffer, until inferred
    letterboxes: list[Letterbox]
    ms: dict[str, float]
    outputs: dict[str, np.ndarray] | None = None


class _Runner:
    def __init__(self, backend: Backend, source: Source, cfg: RunConfig) -> None:
        if backend.sidecar is None:
            raise RunConfigError("the backend has no sidecar; create it with load_artifact()")
        self.be, self.source, self.cfg, self.sc = backend, source, cfg, backend.sidecar
        spec = backend.input_spec
        top = min(m for m in (spec.batch_max, self.sc.batch.max) if m is not None)
        if cfg.batch > top:
            raise RunConfigError(
                f"--batch {cfg.batch} exceeds the maximum batch of {backend.path.name} ({top}, "
                f"from its {'profile' if spec.batch_max == top else 'sidecar batch.max'}); use "
                f"--batch {top} or re-export with a larger --max-batch"
            )
        self.thresholds = cfg.thresholds(self.sc)
        self.post = Postprocessor(self.sc, self.thresholds)
        self.post.check_outputs(backend.output_names)
        # Round-robin preprocess buffers: batch k's slot is reused by batch k + slots, which the
        # bounded queues only let start once batch k has been inferred (runtime.overlap).
        self.depth = cfg.queue_depth or (1 if source.live else 2)
        n_slots = self.depth + 2 if cfg.overlap else 1
        self._slots = [
            Preprocessor(self.sc.preprocess, cfg.batch, spec.dtype) for _ in range(n_slots)
        ]
        self._next_slot = 0
        self.recorder = LatencyRecorder()
        self.results: list[FrameResult] = []
        self.processed = 0
        self.sink: OverlaySink | None = None
        self.class_names = self.sc.det.class_names if self.sc.det else ()

    def run(self) -> RunResult:
        if self.cfg.save:
            self.sink = open_sink(self.cfg.save, self.source.fps or self.cfg.target_fps)
        feed = FrameFeed(
            self.source,
            self.cfg.max_frames,
            self.cfg.live_buffer or 2 * self.cfg.batch,
            self.cfg.stall_timeout,
        )
        total = _min_known(self.source.length, self.cfg.max_frames)
        self.bar = tqdm(total=total, unit="frame", disable=not self.cfg.progress, desc="mtc-run")
        start, interrupted = time.perf_counter(), False
        self.measured_from = start
        try:
            self._drive(self._batches(feed))
            reason = feed.stop_reason or self.source.stop_reason
            if self.cfg.max_frames is not None and self.processed >= self.cfg.max_frames:
                reason = f"reached --max-frames {self.cfg.max_frames}"
        except KeyboardInterrupt:
            interrupted, reason = True, "interrupted (Ctrl-C)"
        finally:
            feed.close()
            self.bar.close()
            if self.sink is not None:
                self.sink.close()
        end = time.perf_counter()
        result = self._finish(reason, end - start, end - self.measured_from, feed.dropped)
        if interrupted:
            raise RunInterrupted(result)
        return result

    def _drive(self, batches: Iterator[_Batch]) -> None:
        first = next(batches, None)
        if first is None:
            return
        self._warm_up(first)
        if self.cfg.overlap:
            run_overlapped(chain([first], batches), self._infer, self._complete, self.depth)
        else:
            for b in chain([first], batches):
                self._infer(b)
                self._complete(b)

    def _batches(self, feed: FrameFeed) -> Iterator[_Batch]:
        """Read + preprocess, batch by batch (the producer stage)."""
        it = iter(feed)
        while chunk := list(islice(it, self.cfg.batch)):
            slot = self._slots[self._next_slot]
            self._next_slot = (self._next_slot + 1) % len(self._slots)
            t0 = time.perf_counter()
            tensor, boxes = slot([c.image for c in chunk])
            ms = {"preprocess": (time.perf_counter() - t0) * 1e3}
            yield _Batch(chunk if self.sink else _without_images(chunk), tensor, boxes, ms)

    def _warm_up(self, b: _Batch) -> None:
        """Explicit warm-up on the first batch, never recorded; the first batch's capture times
        move forward by the warm-up's duration (their wait for warm-up is not latency)."""
        assert b.tensor is not None
        t0 = time.perf_counter()
        for _ in range(self.cfg.warmup):
            outputs = self.be.infer(b.tensor)
            self.post(outputs, b.letterboxes, [c.frame_id for c in b.frames])
        self.measured_from = time.perf_counter()
        for c in b.frames:
            c.t_capture += self.measured_from - t0

    def _infer(self, b: _Batch) -> None:
        assert b.tensor is not None
        t0 = time.perf_counter()
        b.outputs = self.be.infer(b.tensor)
        b.ms.update(self.be.last_timing)
        b.ms["infer"] = (time.perf_counter() - t0) * 1e3
        b.tensor = None  # the slot may be refilled now

    def _complete(self, b: _Batch) -> None:
        """Postprocess, record, draw (the consumer stage)."""
        assert b.outputs is not None
        t0 = time.perf_counter()
        ids = [c.frame_id for c in b.frames]
        results = self.post(b.outputs, b.letterboxes, ids)
        done = time.perf_counter()
        b.outputs = None
        ms = b.ms
        ms["postprocess"] = (done - t0) * 1e3
        ms["end_to_end"] = ms["preprocess"] + ms["infer"] + ms["postprocess"]
        per_frame = {
            "read": [c.read_ms for c in b.frames],
            "capture_to_result": [(done - c.t_capture) * 1e3 for c in b.frames],
        }
        if self.sink is not None:
            for c, r in zip(b.frames, results):
                self.sink.write(r.frame_id, draw_overlay(c.image, r, class_names=self.class_names))
            ms["draw"] = (time.perf_counter() - done) * 1e3
        for r, read, lat in zip(results, per_frame["read"], per_frame["capture_to_result"]):
            r.timing.update(ms, read=read, capture_to_result=lat)
        self.recorder.add(ids, ms, per_frame)
        self.processed += len(results)
        self.bar.update(len(results))
        if self.cfg.keep_results:
            self.results.extend(results)

    def _finish(self, reason: str, wall_s: float, measured_s: float, dropped: int) -> RunResult:
        versions = {**self.be.versions(), "numpy": np.__version__, "opencv": cv2.__version__}
        info = RunInfo(
            artifact=self.be.path.name,
            backend=self.be.name,
            device=self.be.device,
            precision=self.sc.precision,
            batch=self.cfg.batch,
            target_fps=self.cfg.target_fps,
            warmup_batches=self.cfg.warmup,
            tensorrt_version=self.sc.tensorrt.version if self.sc.tensorrt else NOT_AVAILABLE,
            power_mode=jetson_power_mode(),
            versions=versions,
            source=f"{self.source.kind}: {self.source.spec}"
            if self.source.kind != "arrays"
            else "arrays (Python)",
            frames_processed=self.processed,
            frames_skipped=self.source.frames_skipped,
            stop_reason=reason,
            wall_s=wall_s,
            overlap=self.cfg.overlap,
            queue_depth=self.depth if self.cfg.overlap else 0,
            frames_dropped=dropped,
            thresholds=dataclasses.asdict(self.thresholds),
            measured_wall_s=measured_s,
        )
        report = LatencyReport.build(info, self.recorder)
        files = report.write(self.cfg.report) if self.cfg.report else []
        return RunResult(self.results, report, files, self.sink.path if self.sink else None)


def _without_images(chunk: list[Captured]) -> list[Captured]:
    """Drop the frames' pixels once preprocessed when nothing will draw on them."""
    for c in chunk:
        c.image = _NO_IMAGE
    return chunk


_NO_IMAGE = np.zeros((0, 0, 3), np.uint8)


def _min_known(*values: int | None) -> int | None:
    known = [v for v in values if v is not None]
    return min(known) if known else None
