"""Latency statistics, the fps verdicts and the report (JSON + Markdown, PNG via latency_plot).

Definitions (also in docs/readme/runtime.md):
- A frame's stage time is the time of the batch it rode in (every frame of a batch waits for the
  whole batch). `end_to_end` = preprocess + infer + postprocess of that batch, measured on the host
  after the backend synchronised the device. Not included: reading/decoding the frame from its
  source, waiting for a batch to fill, drawing overlays: those are `read`, `capture_to_result`
  (per frame: from the moment the source handed it over to its result, every queue wait
  included; the first batch's wait for warm-up excluded) and `draw`.
- `h2d`, `compute`, `d2h` are device times (CUDA events) where the backend measures them; ONNX
  Runtime reports `compute` only (host wall time around run()). `infer` = host wall time of the
  backend call, so `end_to_end - infer` is the runtime's own overhead.
- Warm-up batches are run before measuring and never recorded.
- Throughput (`throughput_fps`) = frames delivered / wall time of the measured stream (from the
  end of warm-up to the last result: read, decode, drawing and encoding included), in every mode,
  sequential or overlapped. `compute_fps` = frames / summed end_to_end of their batches: what the
  model and the runtime's own stages could sustain if reading and drawing were free.
- Per camera (several sources): frames / the same wall time, and capture_to_result p50 / p99 of
  that camera's frames.
- Latency-bound verdict (a camera at target fps, each frame finished before the next arrives):
  only at batch 1; passes iff p99 of per-frame end_to_end <= 1000 / target_fps ms.
- Throughput-bound verdict (offline or multi-camera): passes iff every camera's throughput (with
  one source: `throughput_fps`) >= target_fps.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtime.fileio import atomic_write_text
from runtime.latency_sources import CameraInfo, camera_notes, num, source_line, source_rows
from runtime.sources import FrameId

# read = time the source took to hand over the frame (decode, or waiting for a camera);
# infer = host wall time of the backend call; h2d / compute / d2h are its device-side breakdown;
# draw = overlay + encode when saving; capture_to_result = from the moment the source handed the
# frame over to its postprocessed result, queue waits included.
STAGES = (
    "read",
    "preprocess",
    "infer",
    "h2d",
    "compute",
    "d2h",
    "postprocess",
    "end_to_end",
    "draw",
    "capture_to_result",
)
_BREAKDOWN = ("h2d", "compute", "d2h")
_NAN = float("nan")
PERCENTILES = (50, 90, 95, 99)


@dataclass(frozen=True)
class StageStats:
    count: int
    min: float
    mean: float
    p50: float
    p90: float
    p95: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: Any) -> StageStats:
        v = np.asarray(values, dtype=np.float64)
        if v.size == 0:
            raise ValueError("no values to summarise")
        p50, p90, p95, p99 = (float(p) for p in np.percentile(v, PERCENTILES))
        return cls(int(v.size), float(v.min()), float(v.mean()), p50, p90, p95, p99, float(v.max()))


@dataclass(frozen=True)
class Verdict:
    mode: str  # "latency" | "throughput"
    target_fps: float
    required: str  # the rule, with numbers
    measured: float | None
    passed: bool | None  # None = not applicable / nothing measured
    reason: str


def latency_verdict(p99_ms: float | None, batch: int, target_fps: float) -> Verdict:
    budget = 1000.0 / target_fps
    rule = f"batch 1 and p99 end_to_end <= {budget:.2f} ms"
    if batch != 1:
        why = (
            f"not applicable at batch {batch}: frames wait for their batch; measure with --batch 1"
        )
        return Verdict("latency", target_fps, rule, p99_ms, None, why)
    if p99_ms is None:
        return Verdict("latency", target_fps, rule, None, None, "no measured frames")
    ok = bool(p99_ms <= budget)
    why = f"p99 {p99_ms:.2f} ms {'<=' if ok else '>'} budget {budget:.2f} ms"
    return Verdict("latency", target_fps, rule, p99_ms, ok, why)


def throughput_verdict(
    fps: float | None,
    target_fps: float,
    per_camera: Sequence[tuple[str, float | None]] = (),
) -> Verdict:
    """With several cameras every one is held to the target: `measured` is the slowest camera's
    fps (frames it delivered / the measured wall time), and the reason names it."""
    if len(per_camera) > 1:
        rule = f"every camera ({len(per_camera)}) >= {target_fps:g} fps"
        rated = [(name, f) for name, f in per_camera]
        if any(f is None for _, f in rated):
            missing = next(name for name, f in rated if f is None)
            return Verdict("throughput", target_fps, rule, None, False, f"{missing}: no frames")
        name, slowest = min(rated, key=lambda nf: nf[1] or 0.0)
        assert slowest is not None
        ok = bool(slowest >= target_fps)
        why = f"slowest camera {name}: {slowest:.1f} fps {'>=' if ok else '<'} {target_fps:g} fps"
        return Verdict("throughput", target_fps, rule, slowest, ok, why)
    rule = f"throughput >= {target_fps:g} fps"
    if fps is None:
        return Verdict("throughput", target_fps, rule, None, None, "no measured frames")
    ok = bool(fps >= target_fps)
    why = f"{fps:.1f} fps {'>=' if ok else '<'} {target_fps:g} fps"
    return Verdict("throughput", target_fps, rule, fps, ok, why)


class LatencyRecorder:
    """Per-frame stage times in flat float arrays (one column per stage, NaN = not measured), so
    an endless run grows by ~100 bytes per frame, not a dict per batch. A batch's stage times are
    given once and count for each of its frames; `per_frame` values (read, capture_to_result)
    differ frame by frame."""

    def __init__(self) -> None:
        self.frame_ids: list[FrameId] = []
        self._cols: dict[str, array] = {s: array("d") for s in STAGES}
        self._batch_index = array("l")
        self._batch_size = array("l")
        self._camera = array("l")
        self.batches = 0

    def add(
        self,
        frame_ids: list[FrameId],
        stage_ms: dict[str, float],
        per_frame: dict[str, list[float]] | None = None,
        cameras: Sequence[int] | None = None,
    ) -> None:
        """`cameras`: the source index of each frame (several sources), else all 0."""
        n, per_frame = len(frame_ids), per_frame or {}
        unknown = (set(stage_ms) | set(per_frame)) - set(STAGES)
        if unknown:
            raise ValueError(f"unknown stage {sorted(unknown)[0]!r}; stages: {', '.join(STAGES)}")
        for stage, col in self._cols.items():
            values = per_frame.get(stage)
            col.extend(values if values is not None else [stage_ms.get(stage, _NAN)] * n)
        self.frame_ids.extend(frame_ids)
        self._batch_index.extend([self.batches] * n)
        self._batch_size.extend([n] * n)
        self._camera.extend(cameras if cameras is not None else [0] * n)
        self.batches += 1

    @property
    def frames(self) -> int:
        return len(self.frame_ids)

    def per_frame(self, stage: str, camera: int | None = None) -> np.ndarray:
        v = np.frombuffer(self._cols[stage], dtype=np.float64) if self.frames else np.zeros(0)
        if camera is not None:
            v = v[self.cameras() == camera]
        return v[~np.isnan(v)].copy()

    def cameras(self) -> np.ndarray:
        """The source index of every recorded frame."""
        return np.frombuffer(self._camera, dtype=np.int64) if self.frames else np.zeros(0, int)

    def stage_stats(self) -> dict[str, StageStats]:
        out = {}
        for stage in STAGES:
            values = self.per_frame(stage)
            if values.size:
                out[stage] = StageStats.of(values)
        return out

    def compute_fps(self) -> float | None:
        """Frames over the summed end_to_end of their batches (each batch counted once): the rate
        of preprocess + infer + postprocess alone, not the stream's (that is the wall clock's)."""
        if not self.frames:
            return None
        e2e = np.frombuffer(self._cols["end_to_end"], dtype=np.float64)
        size = np.asarray(self._batch_size, dtype=np.float64)
        total_ms = float(np.nansum(e2e / size))
        return self.frames / (total_ms / 1e3) if total_ms > 0 else None

    def timeline(self) -> list[dict[str, Any]]:
        rows = []
        for i, fid in enumerate(self.frame_ids):
            row: dict[str, Any] = {
                "frame_id": fid,
                "batch_index": self._batch_index[i],
                "batch_size": self._batch_size[i],
                "camera": self._camera[i],
            }
            row.update((s, c[i]) for s, c in self._cols.items() if not math.isnan(c[i]))
            rows.append(row)
        return rows


@dataclass
class RunInfo:
    artifact: str
    backend: str
    device: str
    precision: str
    batch: int
    target_fps: float
    warmup_batches: int
    tensorrt_version: str  # from the sidecar ("n/a" for ONNX)
    power_mode: str  # `nvpmodel -q` on Jetson, else "n/a"
    versions: dict[str, str] = field(default_factory=dict)
    source: str = ""
    frames_processed: int = 0
    frames_skipped: int = 0  # the source could not decode them (named on screen as they happen)
    stop_reason: str = ""
    wall_s: float = 0.0
    overlap: bool = False  # stages ran overlapped (threads + bounded queues)
    queue_depth: int = 0  # batches allowed to wait between two stages when overlapped
    frames_dropped: int = 0  # a live source's oldest frames dropped while the pipeline was behind
    thresholds: dict[str, float] = field(default_factory=dict)  # the deploy ones applied
    measured_wall_s: float = 0.0  # from the end of warm-up to the last result
    cameras: list[CameraInfo] = field(default_factory=list)  # one per source (empty: one, unnamed)
    max_skew_ms: float | None = None  # live sources: capture-time spread allowed in one batch


@dataclass
class LatencyReport:
    info: RunInfo
    stages: dict[str, StageStats]
    throughput_fps: float | None  # frames / measured wall time, in every mode
    verdicts: list[Verdict]
    timeline: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    compute_fps: float | None = None  # frames / summed end_to_end (model + runtime stages only)
    sources: list[dict[str, Any]] = field(default_factory=list)  # per camera, see source_rows

    @classmethod
    def build(cls, info: RunInfo, recorder: LatencyRecorder) -> LatencyReport:
        """One frame rate: frames delivered over the wall time of the measured stream, whether
        the stages overlap or not; the throughput verdict holds every camera to it."""
        stages = recorder.stage_stats()
        wall = info.measured_wall_s
        fps = recorder.frames / wall if recorder.frames and wall > 0 else None
        sources = source_rows(info, recorder)
        p99 = stages["end_to_end"].p99 if "end_to_end" in stages else None
        per_camera = [(f"{i} ({r['source']})", r["fps"]) for i, r in enumerate(sources)]
        verdicts = [
            latency_verdict(p99, info.batch, info.target_fps),
            throughput_verdict(fps, info.target_fps, per_camera),
        ]
        notes = [] if recorder.frames else ["no frame was measured (the source gave none)"]
        if info.frames_dropped:
            notes.append(
                f"{info.frames_dropped} frames dropped: the live source ran ahead of the pipeline"
            )
        if info.frames_skipped:
            notes.append(f"{info.frames_skipped} frames skipped: they could not be decoded")
        notes += camera_notes(info)
        compute = recorder.compute_fps()
        return cls(info, stages, fps, verdicts, recorder.timeline(), notes, compute, sources)

    @property
    def frames_measured(self) -> int:
        return len(self.timeline)

    def to_dict(self) -> dict[str, Any]:
        return {
            "info": dataclasses.asdict(self.info),
            "frames_measured": self.frames_measured,
            "throughput_fps": self.throughput_fps,
            "compute_fps": self.compute_fps,
            "sources": self.sources,
            "stages_ms": {k: dataclasses.asdict(v) for k, v in self.stages.items()},
            "verdicts": [dataclasses.asdict(v) for v in self.verdicts],
            "notes": self.notes,
            "timeline_ms": self.timeline,
        }

    def table(self) -> str:
        """Fixed-width summary for the terminal."""
        head = f"{'ms / frame':<12}" + "".join(
            f"{c:>9}" for c in ("mean", "p50", "p90", "p99", "max")
        )
        lines = [head, "-" * len(head)]
        for name, s in self.stages.items():
            vals = (s.mean, s.p50, s.p90, s.p99, s.max)
            label = f"  {name}" if name in _BREAKDOWN else name
            lines.append(f"{label:<12}" + "".join(f"{v:9.2f}" for v in vals))
        fps = "n/a" if self.throughput_fps is None else f"{self.throughput_fps:.1f}"
        compute = "n/a" if self.compute_fps is None else f"{self.compute_fps:.1f}"
        mode = "overlapped" if self.info.overlap else "sequential"
        lines.append(
            f"throughput {fps} fps (frames / wall time, {mode}) over {self.frames_measured} "
            f"measured frames; compute {compute} fps (frames / summed end_to_end)"
        )
        if len(self.sources) > 1:
            lines += [source_line(i, r) for i, r in enumerate(self.sources)]
        if self.info.frames_dropped or self.info.frames_skipped:
            lines.append(
                f"dropped {self.info.frames_dropped} (live source ahead), skipped "
                f"{self.info.frames_skipped} (undecodable)"
            )
        lines += [
            f"{v.mode}-bound @ {v.target_fps:g} fps: {_mark(v.passed)} ({v.reason})"
            for v in self.verdicts
        ]
        return "\n".join(lines)

    def to_markdown(self) -> str:
        i = self.info
        rows = [
            ("artifact", i.artifact),
            ("backend", i.backend),
            ("device", i.device),
            ("precision", i.precision),
            ("batch", i.batch),
            ("TensorRT (sidecar)", i.tensorrt_version),
            ("power mode", i.power_mode),
            ("versions", ", ".join(f"{k} {v}" for k, v in i.versions.items())),
            ("source", i.source),
            ("frames processed / measured", f"{i.frames_processed} / {self.frames_measured}"),
            ("frames skipped (undecodable)", i.frames_skipped),
            ("frames dropped (live source ahead)", i.frames_dropped),
            ("stages", "overlapped" if i.overlap else "sequential"),
            ("deploy thresholds", ", ".join(f"{k} {v:g}" for k, v in i.thresholds.items())),
            ("stopped because", i.stop_reason),
            ("warm-up batches", i.warmup_batches),
        ]
        out = ["# Runtime latency report", "", "| | |", "|---|---|"]
        out += [f"| {k} | {v} |" for k, v in rows]
        out += ["", "| stage (ms/frame) | min | mean | p50 | p90 | p95 | p99 | max |"]
        out += ["|---|---|---|---|---|---|---|---|"]
        for name, s in self.stages.items():
            vals = (s.min, s.mean, s.p50, s.p90, s.p95, s.p99, s.max)
            out.append(f"| {name} | " + " | ".join(f"{v:.2f}" for v in vals) + " |")
        fps = "n/a" if self.throughput_fps is None else f"{self.throughput_fps:.1f} fps"
        compute = "n/a" if self.compute_fps is None else f"{self.compute_fps:.1f} fps"
        out += [
            "",
            f"Throughput: {fps} (frames / wall time of the measured stream, everything included); "
            f"compute {compute} (frames / summed end_to_end).",
            "",
        ]
        if len(self.sources) > 1:
            out += ["| camera | source | frames | dropped | missed | fps | p50 ms | p99 ms |"]
            out += ["|---|---|---|---|---|---|---|---|"]
            for k, r in enumerate(self.sources):
                out.append(
                    f"| {k} | {r['source']} | {r['frames']} | {r['dropped']} | {r['missed']} | "
                    f"{num(r['fps'])} | {num(r['p50_ms'])} | {num(r['p99_ms'])} |"
                )
            out.append("")
        out += [
            f"- **{v.mode}-bound** ({v.required}): {_mark(v.passed)} — {v.reason}"
            for v in self.verdicts
        ]
        out += [f"- note: {n}" for n in self.notes]
        return "\n".join(out) + "\n"

    def write(self, path: str | os.PathLike[str]) -> list[Path]:
        """JSON at `path`, Markdown and PNG beside it (same stem). Returns the files written."""
        from runtime.latency_plot import write_latency_png

        json_path = Path(path)
        png_path = json_path.with_suffix(".png")
        note = write_latency_png(self, png_path)
        if note:
            self.notes.append(note)
        written = [atomic_write_text(json_path, json.dumps(self.to_dict(), indent=2) + "\n")]
        written.append(atomic_write_text(json_path.with_suffix(".md"), self.to_markdown()))
        return written + ([png_path] if note is None else [])


def _mark(passed: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: "n/a"}[passed]
