"""frames -> preprocess -> backend -> postprocess -> results + latency report.

`load_artifact` turns a path into an open backend (sidecar first: it decides the backend and is
checked against what the artifact really declares). `run` drives a source through it in batches,
warms up explicitly, times every stage, writes overlays and the report, and on Ctrl-C still writes
the partial report before re-raising as `RunInterrupted` (a KeyboardInterrupt carrying the result).

Stages: read + preprocess (producer) -> infer -> postprocess + draw (consumer). By default they
overlap (`runtime.overlap`: three threads, bounded queues, round-robin preprocess buffers); with
`overlap=False` (`--no-overlap`) they run one after the other on the calling thread. Either way a
live source is read on its own thread and drops its oldest frames when behind (`runtime.feed`).

Several sources (`sources=[...]`, `mtc-run --source A --source B`): each batch holds one frame
from each camera (`runtime.cameras`: matched by capture time, a stalled or finished camera leaves
the others going); the batch is the camera count unless `batch` says otherwise.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, fields, replace
from itertools import chain
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from runtime.backends import Backend, BackendOptions, default_backend, get_backend
from runtime.cameras import MultiFeed, check_camera_count, group_rounds, save_targets
from runtime.errors import MtcError
from runtime.feed import Captured, FrameFeed
from runtime.geometry import Letterbox
from runtime.hostinfo import NOT_AVAILABLE, jetson_power_mode
from runtime.latency import CameraInfo, LatencyRecorder, LatencyReport, RunInfo
from runtime.overlap import run_overlapped
from runtime.overlay import OverlaySink, draw_overlay, open_sink
from runtime.postprocess import FrameResult, Postprocessor
from runtime.preprocess import Preprocessor
from runtime.run_config import RunConfig, RunConfigError, RunInterrupted, RunResult
from runtime.sidecar import SUFFIX_FORMATS, Sidecar, read_sidecar
from runtime.sources import Source, SourceSpec, open_source


class ArtifactNotFoundError(MtcError):
    """The artifact path does not exist."""


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
    frames: SourceSpec | None = None,
    config: RunConfig | None = None,
    *,
    sources: Sequence[SourceSpec] | None = None,
    **overrides: Any,
) -> RunResult:
    """Run frames through an artifact: one source (`frames`) or several (`sources=[...]`, one
    frame of each per batch). `overrides` are RunConfig fields (`batch=4`, `save=...`)."""
    unknown = set(overrides) - {f.name for f in fields(RunConfig)}
    if unknown:
        raise RunConfigError(
            f"unknown run option {sorted(unknown)[0]!r}; valid: "
            f"{', '.join(f.name for f in fields(RunConfig))}"
        )
    specs = _source_specs(frames, sources)
    cfg = replace(config or RunConfig(), **overrides)
    targets = save_targets(cfg.save, len(specs)) if cfg.save else []
    if isinstance(artifact_or_backend, Backend):
        be, opened_here = artifact_or_backend, not artifact_or_backend.is_open
    else:
        be, opened_here = load_artifact(artifact_or_backend), True
    try:
        if not be.is_open:
            be.open()
        batch = check_camera_count(len(specs), cfg.batch, _max_batch(be), be.path.name)
        with ExitStack() as stack:  # a source that fails to open closes those opened before it
            opened = [stack.enter_context(open_source(spec)) for spec in specs]
            return _Runner(be, opened, cfg, batch, targets).run()
    finally:
        if opened_here:
            be.close()


def _source_specs(frames: SourceSpec | None, sources: Sequence[SourceSpec] | None) -> list[Any]:
    if (frames is None) == (sources is None):
        raise RunConfigError(
            "run() takes one source as `frames` or several as `sources=[...]`, "
            f"got {'both' if frames is not None else 'neither'}"
        )
    if sources is not None:
        if isinstance(sources, (str, bytes, os.PathLike)) or not len(sources):
            raise RunConfigError(
                f"sources must be a non-empty list of sources, got {sources!r}; "
                "e.g. sources=['front.mp4', 'left.mp4']"
            )
        return list(sources)
    return [frames]


def _max_batch(be: Backend) -> int:
    spec, sc = be.input_spec, be.sidecar
    limits = [m for m in (spec.batch_max, sc.batch.max if sc else None) if m is not None]
    return min(limits) if limits else 1 << 30


@dataclass(eq=False)
class _Batch:
    """One batch on its way through the stages."""

    frames: list[Captured]  # each knows its camera (source index)
    tensor: np.ndarray | None  # a view of one preprocessor slot's buffer, until inferred
    letterboxes: list[Letterbox]
    ms: dict[str, float]
    outputs: dict[str, np.ndarray] | None = None


class _Runner:
    def __init__(
        self,
        backend: Backend,
        sources: list[Source],
        cfg: RunConfig,
        batch: int,
        save_targets: list[str],
    ) -> None:
        if backend.sidecar is None:
            raise RunConfigError("the backend has no sidecar; create it with load_artifact()")
        self.be, self.sources, self.cfg, self.sc = backend, sources, cfg, backend.sidecar
        self.batch, self.save_targets = batch, save_targets
        spec = backend.input_spec
        top = _max_batch(backend)
        if batch > top:
            raise RunConfigError(
                f"--batch {batch} exceeds the maximum batch of {backend.path.name} ({top}, "
                f"from its {'profile' if spec.batch_max == top else 'sidecar batch.max'}); use "
                f"--batch {top} or re-export with a larger --max-batch"
            )
        self.thresholds = cfg.thresholds(self.sc)
        self.post = Postprocessor(self.sc, self.thresholds)
        self.post.check_outputs(backend.output_names)
        # Round-robin preprocess buffers: batch k's slot is reused by batch k + slots, which the
        # bounded queues only let start once batch k has been inferred (runtime.overlap).
        live = any(s.live for s in sources)
        self.depth = cfg.queue_depth or (1 if live else 2)
        n_slots = self.depth + 2 if cfg.overlap else 1
        layout = self.sc.input.layout
        self._slots = [
            Preprocessor(self.sc.preprocess, batch, spec.dtype, layout=layout)
            for _ in range(n_slots)
        ]
        self._next_slot = 0
        self.recorder = LatencyRecorder()
        self.results: list[FrameResult] = []
        self.processed = 0
        self.sinks: list[OverlaySink] = []
        self.sizes: list[set[tuple[int, int]]] = [set() for _ in sources]
        self.class_names = self.sc.det.class_names if self.sc.det else ()

    def run(self) -> RunResult:
        fps = [s.fps or self.cfg.target_fps for s in self.sources]
        self.sinks = [open_sink(t, f) for t, f in zip(self.save_targets, fps)]
        feed = self._feed()
        lengths = [s.length for s in self.sources]
        known = [_min_known(n, self.cfg.max_frames) for n in lengths]
        total = None if None in known else sum(n or 0 for n in known)
        self.bar = tqdm(total=total, unit="frame", disable=not self.cfg.progress, desc="mtc-run")
        start, interrupted = time.perf_counter(), False
        self.measured_from = start
        try:
            self._drive(self._batches(feed))
            reason = self._stop_reason(feed)
        except KeyboardInterrupt:
            interrupted, reason = True, "interrupted (Ctrl-C)"
        finally:
            feed.close()
            self.bar.close()
            for sink in self.sinks:
                sink.close()
        end = time.perf_counter()
        result = self._finish(reason, end - start, end - self.measured_from, feed)
        if interrupted:
            raise RunInterrupted(result)
        return result

    def _feed(self) -> FrameFeed | MultiFeed:
        cfg = self.cfg
        if len(self.sources) == 1:
            buffer = cfg.live_buffer or 2 * self.batch
            return FrameFeed(self.sources[0], cfg.max_frames, buffer, cfg.stall_timeout)
        return MultiFeed(
            self.sources,
            cfg.max_frames,
            cfg.live_buffer or 2,
            cfg.stall_timeout,
            cfg.max_skew_ms / 1e3,
        )

    def _stop_reason(self, feed: FrameFeed | MultiFeed) -> str:
        if isinstance(feed, MultiFeed):
            return "; ".join(f"camera {k}: {st.stop_reason}" for k, st in enumerate(feed.states))
        reason = feed.stop_reason or self.sources[0].stop_reason
        if self.cfg.max_frames is not None and self.processed >= self.cfg.max_frames:
            reason = f"reached --max-frames {self.cfg.max_frames}"
        return reason

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

    def _batches(self, feed: FrameFeed | MultiFeed) -> Iterator[_Batch]:
        """Read + preprocess, batch by batch (the producer stage)."""
        rounds = ([c] for c in feed) if isinstance(feed, FrameFeed) else iter(feed)
        for chunk in group_rounds(rounds, self.batch, len(self.sources)):
            slot = self._slots[self._next_slot]
            self._next_slot = (self._next_slot + 1) % len(self._slots)
            for c in chunk:
                self.sizes[c.camera].add(c.image.shape[:2])
            t0 = time.perf_counter()
            tensor, boxes = slot([c.image for c in chunk])
            ms = {"preprocess": (time.perf_counter() - t0) * 1e3}
            yield _Batch(chunk if self.sinks else _without_images(chunk), tensor, boxes, ms)

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
        if self.sinks:
            for c, r in zip(b.frames, results):
                image = draw_overlay(c.image, r, class_names=self.class_names)
                self.sinks[c.camera].write(r.frame_id, image)
            ms["draw"] = (time.perf_counter() - done) * 1e3
        # FrameResult is frozen: a frame of another camera than the first gets its index this way
        results = [
            r if c.camera == 0 else replace(r, camera=c.camera) for c, r in zip(b.frames, results)
        ]
        for r, read, lat in zip(results, per_frame["read"], per_frame["capture_to_result"]):
            r.timing.update(ms, read=read, capture_to_result=lat)
        self.recorder.add(ids, ms, per_frame, [c.camera for c in b.frames])
        self.processed += len(results)
        self.bar.update(len(results))
        if self.cfg.keep_results:
            self.results.extend(results)

    def _finish(
        self, reason: str, wall_s: float, measured_s: float, feed: FrameFeed | MultiFeed
    ) -> RunResult:
        versions = {**self.be.versions(), "numpy": np.__version__, "opencv": cv2.__version__}
        cameras = self._cameras(feed)
        info = RunInfo(
            artifact=self.be.path.name,
            backend=self.be.name,
            device=self.be.device,
            precision=self.sc.precision,
            batch=self.batch,
            target_fps=self.cfg.target_fps,
            warmup_batches=self.cfg.warmup,
            tensorrt_version=self.sc.tensorrt.version if self.sc.tensorrt else NOT_AVAILABLE,
            power_mode=jetson_power_mode(),
            versions=versions,
            source=", ".join(c.source for c in cameras),
            frames_processed=self.processed,
            frames_skipped=sum(s.frames_skipped for s in self.sources),
            stop_reason=reason,
            wall_s=wall_s,
            overlap=self.cfg.overlap,
            queue_depth=self.depth if self.cfg.overlap else 0,
            frames_dropped=feed.dropped,
            thresholds=dataclasses.asdict(self.thresholds),
            measured_wall_s=measured_s,
            cameras=cameras,
            max_skew_ms=self.cfg.max_skew_ms if isinstance(feed, MultiFeed) else None,
        )
        report = LatencyReport.build(info, self.recorder)
        files = report.write(self.cfg.report) if self.cfg.report else []
        overlays = [s.path for s in self.sinks]
        return RunResult(self.results, report, files, overlays[0] if overlays else None, overlays)

    def _cameras(self, feed: FrameFeed | MultiFeed) -> list[CameraInfo]:
        out = []
        for k, src in enumerate(self.sources):
            name = f"{src.kind}: {src.spec}" if src.kind != "arrays" else "arrays (Python)"
            if isinstance(feed, MultiFeed):
                st = feed.states[k]
                dropped, missed, why = feed.feeds[k].dropped + st.dropped, st.missed, st.stop_reason
            else:
                dropped, missed, why = feed.dropped, 0, feed.stop_reason or src.stop_reason
            sizes = [list(hw) for hw in sorted(self.sizes[k])]
            out.append(
                CameraInfo(name, src.frames_read, dropped, missed, src.frames_skipped, why, sizes)
            )
        return out


def _without_images(chunk: list[Captured]) -> list[Captured]:
    """Drop the frames' pixels once preprocessed when nothing will draw on them."""
    for c in chunk:
        c.image = _NO_IMAGE
    return chunk


_NO_IMAGE = np.zeros((0, 0, 3), np.uint8)


def _min_known(*values: int | None) -> int | None:
    known = [v for v in values if v is not None]
    return min(known) if known else None
