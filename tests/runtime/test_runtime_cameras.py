"""Several sources in one run: one frame of each camera per batch, per-camera results, overlays
and latency; a stalled or finished camera leaves the others going; one honest frame rate."""

from __future__ import annotations

import json
import threading
import time
import types

import cv2
import numpy as np
import pytest
from runtime_helpers import make_artifact, split_frame

from runtime import feed as feed_module
from runtime import load_artifact, run
from runtime import pipeline as pipeline_module
from runtime.cameras import CameraCountError, SaveTargetError, save_targets
from runtime.cli import main
from runtime.sidecar import BatchRange
from runtime.sources import Source, SourceError


def _frames(n, h=48, w=80, seed=0):
    rng = np.random.default_rng(seed)
    return [(f"f{i}", split_frame(h, w, int(rng.integers(60, 250)))) for i in range(n)]


def _video(path, n, h, w):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 30, (w, h))
    for i in range(n):
        writer.write(split_frame(h, w, 80 + 10 * i))
    writer.release()
    return path


def test_each_batch_holds_one_frame_per_camera_and_results_match_single_runs(tmp_path):
    art = make_artifact(tmp_path)
    cams = [_frames(6, seed=0), _frames(3, 60, 100, seed=1), _frames(6, 40, 90, seed=2)]
    kw = {"warmup": 1, "progress": False}
    res = run(art, sources=cams, report=str(tmp_path / "lat.json"), **kw)
    assert res.report.info.batch == 3  # the camera count
    sizes = [r["batch_size"] for r in res.report.timeline]
    assert sizes == [3] * 9 + [2] * 6  # camera 1 ended after 3 frames: the batch shrinks
    for k, frames in enumerate(cams):
        alone = run(art, frames, batch=1, **kw)
        mine = res.by_camera(k)
        assert [r.frame_id for r in mine] == [f for f, _ in frames]
        for a, b in zip(alone.results, mine):
            np.testing.assert_allclose(a.boxes, b.boxes, rtol=1e-5, atol=1e-4)
            np.testing.assert_array_equal(a.drivable, b.drivable)
            assert b.drivable.shape == frames[0][1].shape[:2]  # each letterboxed on its own
    data = json.loads((tmp_path / "lat.json").read_text())
    assert [s["frames"] for s in data["sources"]] == [6, 3, 6]
    assert all(s["p50_ms"] is not None and s["p99_ms"] is not None for s in data["sources"])
    assert any("different frame sizes" in n for n in data["notes"])
    assert "camera 1: end of input" in res.report.info.stop_reason
    assert any("camera 1" in n and "stopped after 3 frames" in n for n in data["notes"])


def test_batch_option_splits_or_joins_rounds(tmp_path):
    art = make_artifact(tmp_path)
    cams = [_frames(4, seed=k) for k in range(2)]
    joined = run(art, sources=cams, batch=4, warmup=0, progress=False)
    assert [r["batch_size"] for r in joined.report.timeline] == [4] * 8
    split = run(art, sources=[_frames(2, seed=k) for k in range(3)], batch=2, progress=False)
    assert [r["batch_size"] for r in split.report.timeline] == [
        2,
        2,
        1,
        2,
        2,
        1,
    ]  # rounds of 3 -> 2 + 1


def test_more_cameras_than_the_profile_fails_before_opening_any(tmp_path):
    art = make_artifact(tmp_path, batch=BatchRange(1, 1, 2))
    missing = [str(tmp_path / f"nope{k}.mp4") for k in range(3)]  # opening any would fail
    with pytest.raises(CameraCountError, match="3 sources but model.onnx takes at most 2"):
        run(art, sources=missing)
    with pytest.raises(SourceError):  # with --batch 2 the rounds are split: now it opens them
        run(art, sources=missing, batch=2)


def test_save_targets_per_camera_and_a_single_file_is_refused(tmp_path):
    assert save_targets("o/cam{camera}.mp4", 2) == ["o/cam0.mp4", "o/cam1.mp4"]
    assert save_targets("o.mp4", 1) == ["o.mp4"]
    assert save_targets("o", 2)[1].endswith("o/cam1")
    with pytest.raises(SaveTargetError, match="names one file, but there are 2 sources"):
        save_targets("o.mp4", 2)
    art = make_artifact(tmp_path)
    cams = [_frames(3, seed=k) for k in range(2)]
    res = run(art, sources=cams, save=str(tmp_path / "v{camera}.mp4"), progress=False)
    assert [p.name for p in res.overlays_by_camera] == ["v0.mp4", "v1.mp4"]
    for p in res.overlays_by_camera:
        assert int(cv2.VideoCapture(str(p)).get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    res = run(art, sources=cams, save=str(tmp_path / "jpegs"), progress=False)
    assert sorted(p.name for p in (tmp_path / "jpegs" / "cam1").iterdir()) == [
        "f0.jpg",
        "f1.jpg",
        "f2.jpg",
    ]


class _Cam(Source):
    """A live camera stand-in at ~`fps`; stops delivering (stalls) after `stall_after` frames."""

    kind = "camera"
    live = True

    def __init__(self, name, n, fps=200.0, stall_after=None, release=None):
        super().__init__(name)
        self.n, self.period, self.stall_after = n, 1.0 / fps, stall_after
        self.release = release or threading.Event()

    @classmethod
    def claims(cls, spec):
        return False

    def _frames(self):
        for i in range(self.n):
            if self.stall_after is not None and i == self.stall_after:
                self.release.wait(30)
                return
            time.sleep(self.period)
            yield i, split_frame(value=60 + i % 190)
        self.stop_reason = f"camera {self.spec} ended"


def test_a_stalled_camera_does_not_stall_the_others(tmp_path):
    release = threading.Event()
    cams = [_Cam("a", 30), _Cam("b", 30, stall_after=5, release=release), _Cam("c", 30)]
    try:
        res = run(
            make_artifact(tmp_path),
            sources=cams,
            warmup=0,
            progress=False,
            stall_timeout=0.4,
            live_buffer=64,
            max_skew_ms=100,
        )
    finally:
        release.set()
    rows = res.report.sources
    for r in (rows[0], rows[2]):  # the others went on to their end
        assert r["frames"] + r["dropped"] == 30 and r["frames"] >= 20
        assert r["stop_reason"].endswith("ended")
    assert rows[1]["frames"] == 5
    assert "stalled" in rows[1]["stop_reason"] and rows[1]["missed"] >= 1
    assert any("camera 1" in n and "missed" in n for n in res.report.notes)


def test_live_frames_in_one_batch_are_within_the_skew(tmp_path):
    cams = [_Cam("fast", 40, fps=400.0), _Cam("slow", 10, fps=50.0)]
    seen = []
    original = pipeline_module._Runner._complete

    def spy(self, b):
        seen.append([c.t_capture for c in b.frames])
        original(self, b)

    mp = pytest.MonkeyPatch()
    mp.setattr(pipeline_module._Runner, "_complete", spy)
    try:
        res = run(
            make_artifact(tmp_path),
            sources=cams,
            warmup=0,
            progress=False,
            overlap=False,
            max_skew_ms=15,
            live_buffer=64,
        )
    finally:
        mp.undo()
    fast, slow = res.report.sources
    assert slow["frames"] + slow["dropped"] == 10 and slow["frames"] >= 5
    assert fast["frames"] + fast["dropped"] <= 40
    assert fast["dropped"] > 0  # the fast camera's stale frames gave way to fresh ones
    for stamps in seen:
        assert max(stamps) - min(stamps) <= 0.015 + 1e-9


class _Clock:
    def __init__(self):
        self.t = 100.0

    def perf_counter(self):
        return self.t

    def advance(self, s):
        self.t += s


def test_throughput_is_frames_over_the_measured_wall_on_a_synthetic_timeline(tmp_path, monkeypatch):
    """Sequential, on a fake clock: reading a frame takes 5 ms, an inference 10 ms, nothing else
    takes time. 8 frames, batch 2, 1 warm-up pass: the measured stream (after warm-up) is 3
    batches' reads (6 x 5 ms) + 4 inferences (40 ms) = 70 ms."""
    clock = _Clock()
    fake_time = types.SimpleNamespace(perf_counter=clock.perf_counter)
    monkeypatch.setattr(pipeline_module, "time", fake_time)
    monkeypatch.setattr(feed_module, "time", fake_time)

    def frames():
        for i in range(8):
            clock.advance(0.005)
            yield i, split_frame()

    with load_artifact(make_artifact(tmp_path)) as be:
        real = be.infer

        def infer(batch):
            clock.advance(0.010)
            return real(batch)

        be.infer = infer  # type: ignore[method-assign]
        res = run(be, frames(), batch=2, warmup=1, overlap=False, progress=False)
    rep = res.report
    assert rep.info.measured_wall_s == pytest.approx(0.070)
    assert rep.throughput_fps == pytest.approx(8 / 0.070)
    assert rep.compute_fps == pytest.approx(8 / 0.040)  # summed end_to_end: 4 x 10 ms
    assert rep.verdicts[1].measured == pytest.approx(8 / 0.070)


def test_cli_runs_every_source_and_refuses_one_file_for_several(tmp_path, capsys):
    art = make_artifact(tmp_path)
    a = _video(tmp_path / "a.mp4", 4, 48, 80)
    b = _video(tmp_path / "b.mp4", 4, 72, 96)
    report = tmp_path / "lat.json"
    argv = [str(art), "--source", str(a), "--source", str(b), "--report", str(report), "--quiet"]
    assert main(argv) == 0
    data = json.loads(report.read_text())
    assert [s["frames"] for s in data["sources"]] == [4, 4]  # not only the last --source
    assert data["info"]["batch"] == 2
    capsys.readouterr()
    assert main([*argv, "--save", str(tmp_path / "out.mp4")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "names one file, but there are 2 sources" in err[0]
    (tmp_path / "small").mkdir()
    small = make_artifact(tmp_path / "small", batch=BatchRange(1, 1, 1))
    argv = [str(small), "--source", str(a), "--source", str(b), "--report", str(report)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "2 sources but model.onnx takes at most 1" in err[0]
