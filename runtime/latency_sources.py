"""Per-camera figures of a run (several sources): what each camera delivered, its latency from
capture to result, its frame rate over the run's wall time, and the notes the report makes of
them (sources of different frame sizes, cameras that missed batches)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from runtime.latency import LatencyRecorder, RunInfo


@dataclass
class CameraInfo:
    """One source of a run, as the pipeline saw it."""

    source: str  # "video: front.mp4", "camera: 0", ...
    frames_read: int = 0  # handed over by the source
    dropped: int = 0  # a live source's stale frames dropped (pipeline behind, or beyond the skew)
    missed: int = 0  # batches that went without this camera's frame (stalled, late)
    skipped: int = 0  # undecodable frames
    stop_reason: str = ""
    frame_sizes: list[list[int]] = field(default_factory=list)  # distinct [H, W] seen


def source_rows(info: RunInfo, recorder: LatencyRecorder) -> list[dict[str, Any]]:
    """Per camera: {source, frames, dropped, missed, fps, p50_ms, p99_ms} with p50 / p99 of
    capture_to_result (capture to result, every wait included) and fps over the run's wall."""
    cams = info.cameras or [CameraInfo(info.source, dropped=info.frames_dropped)]
    wall = info.measured_wall_s
    ids = recorder.cameras()
    rows = []
    for k, cam in enumerate(cams):
        n = int((ids == k).sum())
        lat = recorder.per_frame("capture_to_result", camera=k)
        rows.append(
            {
                "source": cam.source,
                "frames": n,
                "dropped": cam.dropped,
                "missed": cam.missed,
                "skipped": cam.skipped,
                "fps": n / wall if n and wall > 0 else None,
                "p50_ms": float(np.percentile(lat, 50)) if lat.size else None,
                "p99_ms": float(np.percentile(lat, 99)) if lat.size else None,
                "frame_sizes": cam.frame_sizes,
                "stop_reason": cam.stop_reason,
            }
        )
    return rows


def camera_notes(info: RunInfo) -> list[str]:
    """What the report says about several sources: sizes that differ, cameras that stopped."""
    if len(info.cameras) < 2:
        return []
    notes = []
    sizes = {tuple(hw) for cam in info.cameras for hw in cam.frame_sizes}
    if len(sizes) > 1:
        seen = ", ".join(f"{h}x{w}" for h, w in sorted(sizes))
        notes.append(f"the sources deliver different frame sizes ({seen}); each is letterboxed")
    most = max(cam.frames_read for cam in info.cameras)
    for k, cam in enumerate(info.cameras):
        if cam.missed:
            notes.append(
                f"camera {k} ({cam.source}) missed {cam.missed} batches ({cam.stop_reason})"
            )
        elif cam.frames_read < most:
            notes.append(
                f"camera {k} ({cam.source}) stopped after {cam.frames_read} frames "
                f"({cam.stop_reason}); the others went on"
            )
    return notes


def source_line(k: int, r: dict[str, Any]) -> str:
    return (
        f"camera {k} {r['source']}: {r['frames']} frames, {num(r['fps'])} fps, "
        f"capture->result p50 {num(r['p50_ms'])} p99 {num(r['p99_ms'])} ms, dropped "
        f"{r['dropped']}, missed {r['missed']}"
    )


def num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f}"
