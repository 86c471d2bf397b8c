"""Memory stays flat on a long run (bounded queues, no per-frame state kept with
keep_results=False). The full 10,000-frame check is benchmarks/bench_runtime_overhead.py."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from runtime_helpers import make_artifact

from runtime import overlay, run


def _rss_mb() -> float:
    text = Path("/proc/self/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", text).group(1)) / 1024  # type: ignore[union-attr]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc (Linux)")
@pytest.mark.parametrize("overlap", [True, False])
def test_rss_stays_flat_over_a_long_video_with_save(tmp_path, overlap):
    n, h, w = 1500, 180, 320
    video = tmp_path / "long.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"mp4v"), 30, (w, h))
    rng = np.random.default_rng(0)
    base = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for _ in range(4)]
    for i in range(n):
        writer.write(base[i % 4])
    writer.release()
    samples: dict[int, float] = {}

    original = overlay.Mp4Sink.write

    def write(self, frame_id, image):  # samples RSS as frames reach the last stage
        original(self, frame_id, image)
        if self.written in (100, n // 2, n):
            samples[self.written] = _rss_mb()

    mp = pytest.MonkeyPatch()
    mp.setattr(overlay.Mp4Sink, "write", write)
    try:
        res = run(
            make_artifact(tmp_path),
            str(video),
            overlap=overlap,
            keep_results=False,
            progress=False,
            save=str(tmp_path / "out.mp4"),
            report=str(tmp_path / "lat.json"),
        )
    finally:
        mp.undo()
    assert res.report.info.frames_processed == n
    assert set(samples) == {100, n // 2, n}
    assert samples[n] - samples[100] < 20.0, samples  # MB; the timeline adds ~0.1 KB per frame


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc (Linux)")
def test_rss_stays_flat_over_a_long_multi_camera_run(tmp_path):
    """4 cameras x 600 frames (one of them 640x360, the others 320x180), overlays saved per
    camera: RSS after batch 100 vs the highest after it."""
    from runtime import pipeline

    n = 600
    videos = []
    for k in range(4):
        h, w = (360, 640) if k == 0 else (180, 320)
        video = tmp_path / f"cam{k}.mp4"
        writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"mp4v"), 30, (w, h))
        rng = np.random.default_rng(k)
        base = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for _ in range(4)]
        for i in range(n):
            writer.write(base[i % 4])
        writer.release()
        videos.append(str(video))
    samples: dict[int, float] = {}
    original = pipeline._Runner._complete

    def complete(self, b):
        original(self, b)
        if self.recorder.batches >= 100 and self.recorder.batches % 50 == 0:
            samples[self.recorder.batches] = _rss_mb()

    mp = pytest.MonkeyPatch()
    mp.setattr(pipeline._Runner, "_complete", complete)
    try:
        res = run(
            make_artifact(tmp_path),
            sources=videos,
            keep_results=False,
            progress=False,
            save=str(tmp_path / "out" / "cam{camera}.mp4"),
        )
    finally:
        mp.undo()
    assert [s["frames"] for s in res.report.sources] == [n] * 4
    assert min(samples) == 100 and max(samples) == n
    assert max(samples.values()) - samples[100] < 50.0, samples  # MB
