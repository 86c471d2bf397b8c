"""Latency statistics, the fps verdicts and the report (JSON + Markdown, PNG via latency_plot).

Definitions (also in docs/readme/runtime.md):
- A frame's stage time is the time of the batch it rode in (every frame of a batch waits for the
  whole batch). `end_to_end` = preprocess + infer + postprocess of that batch, measured on the host
  after the backend synchronised the device. Not included: reading/decoding the frame from its
  source, waiting for a batch to fill, drawing overlays.
- `h2d`, `compute`, `d2h` are device times (CUDA events) where the backend measures them; ONNX
  Runtime reports `compute` only (host wall time around run()). `infer` = host wall time of the
  backend call, so `end_to_end - infer` is the runtime's own overhead.
- Warm-up batches are run before measuring and never recorded.
- Throughput = measured frames / summed end_to_end of the measured batches.
- Latency-bound verdict (a camera at target fps, each frame finished before the next arrives):
  only at batch 1; passes iff p99 of per-frame end_to_end <= 1000 / target_fps ms.
- Throughput-bound verdict (offline or multi-camera): passes iff throughput >= target_fps.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtime.fileio import atomic_write_text
from runtime.sources import FrameId

# infer = host wall time of the backend call; h2d / compute / d2h are its device-side breakdown.
STAGES = ("preprocess", "infer", "h2d", "compute", "d2h", "postprocess", "end_to_end")
_BREAKDOWN = ("h2d", "compute", "d2h")
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


def throughput_verdict(fps: float | None, target_fps: float) -> Verdict:
    rule = f"throughput >= {target_fps:g} fps"
    if fps is None:
        return Verdict("throughput", target_fps, rule, None, None, "no measured frames")
    ok = bool(fps >= target_fps)
    why = f"{fps:.1f} fps {'>=' if ok else '<'} {target_fps:g} fps"
    return Verdict("throughput", target_fps, rule, fps, ok, why)


class LatencyRecorder:
    """Collects per-batch stage times; expands them per frame for the statistics."""

    def __init__(self) -> None:
        self.batches: list[tuple[list[FrameId], dict[str, float]]] = []

    def add(self, frame_ids: list[FrameId], stage_ms: dict[str, float]) -> None:
        self.batches.append((list(frame_ids), dict(stage_ms)))

    @property
    def frames(self) -> int:
        return sum(len(ids) for ids, _ in self.batches)

    def per_frame(self, stage: str) -> np.ndarray:
        return np.asarray(
            [ms[stage] for ids, ms in self.batches if stage in ms for _ in ids], dtype=np.float64
        )

    def stage_stats(self) -> dict[str, StageStats]:
        out = {}
        for stage in STAGES:
            values = self.per_frame(stage)
            if values.size:
                out[stage] = StageStats.of(values)
        return out

    def throughput_fps(self) -> float | None:
        total_ms = sum(ms["end_to_end"] for _, ms in self.batches)
        return self.frames / (total_ms / 1e3) if self.batches and total_ms > 0 else None

    def timeline(self) -> list[dict[str, Any]]:
        rows = []
        for b, (ids, ms) in enumerate(self.batches):
            for fid in ids:
                rows.append({"frame_id": fid, "batch_index": b, "batch_size": len(ids), **ms})
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
    frames_skipped: int = 0
    stop_reason: str = ""
    wall_s: float = 0.0


@dataclass
class LatencyReport:
    info: RunInfo
    stages: dict[str, StageStats]
    throughput_fps: float | None
    verdicts: list[Verdict]
    timeline: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)

    @classmethod
    def build(cls, info: RunInfo, recorder: LatencyRecorder) -> LatencyReport:
        stages = recorder.stage_stats()
        fps = recorder.throughput_fps()
        p99 = stages["end_to_end"].p99 if "end_to_end" in stages else None
        verdicts = [
            latency_verdict(p99, info.batch, info.target_fps),
            throughput_verdict(fps, info.target_fps),
        ]
        notes = [] if recorder.frames else ["no frame was measured (the source gave none)"]
        return cls(info, stages, fps, verdicts, recorder.timeline(), notes)

    @property
    def frames_measured(self) -> int:
        return len(self.timeline)

    def to_dict(self) -> dict[str, Any]:
        return {
            "info": dataclasses.asdict(self.info),
            "frames_measured": self.frames_measured,
            "throughput_fps": self.throughput_fps,
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
        lines.append(f"throughput {fps} fps over {self.frames_measured} measured frames")
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
            ("frames skipped", i.frames_skipped),
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
        out += ["", f"Throughput: {fps}.", ""]
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
