"""Overlapped stages: same results as sequential, bounded in-flight work, errors and stalls end
the run cleanly; live sources drop their oldest frames; undecodable frames are skipped."""

from __future__ import annotations

import json
import threading
import time
import warnings

import cv2
import numpy as np
import pytest
from runtime_helpers import make_artifact, split_frame

from runtime import run
from runtime.feed import FrameFeed
from runtime.overlap import run_overlapped
from runtime.sources import FrameFormatWarning, Source, VideoFileSource


def _frames(n):
    return [(f"f{i}", split_frame(48 + 4 * (i % 3), 80, 100 + 10 * i)) for i in range(n)]


def test_overlapped_and_sequential_give_the_same_results(tmp_path):
    art = make_artifact(tmp_path)
    kw = {"batch": 2, "warmup": 1, "progress": False}
    seq = run(art, _frames(7), overlap=False, save=str(tmp_path / "a.mp4"), **kw)
    ovl = run(art, _frames(7), overlap=True, save=str(tmp_path / "b.mp4"), **kw)
    assert [r.frame_id for r in ovl.results] == [f"f{i}" for i in range(7)]
    for a, b in zip(seq.results, ovl.results):
        assert a.frame_id == b.frame_id
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.drivable, b.drivable)
        np.testing.assert_array_equal(a.lane, b.lane)
    assert (seq.report.info.overlap, ovl.report.info.overlap) == (False, True)
    for res in (seq, ovl):
        stages = res.report.stages
        assert {"read", "preprocess", "infer", "postprocess", "draw", "capture_to_result"} <= set(
            stages
        )
        assert stages["capture_to_result"].count == 7 and res.report.throughput_fps > 0
        # a frame's capture-to-result covers at least its batch's own stages
        for row in res.report.timeline:
            assert row["capture_to_result"] >= row["end_to_end"] - 1e-6
    for name in ("a.mp4", "b.mp4"):
        cap = cv2.VideoCapture(str(tmp_path / name))
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 7


def test_in_flight_work_is_bounded_by_the_queues():
    produced, done, peak = [0], [0], [0]

    def items():
        for i in range(60):
            produced[0] += 1
            peak[0] = max(peak[0], produced[0] - done[0])
            yield i

    order = []

    def last(i):
        time.sleep(0.002)  # the slow stage: everything before it must wait, not pile up
        order.append(i)
        done[0] += 1

    run_overlapped(items(), lambda i: None, last, depth=2)
    assert order == list(range(60))
    # producer 1 + queue 2 + middle 1 + queue 2 + consumer 1 (+1 counted before the put blocks)
    assert peak[0] <= 8


@pytest.mark.parametrize("where", ["middle", "last"])
def test_a_failing_stage_stops_the_others_and_raises(where):
    seen = []

    def boom(i):
        if i == 5:
            raise RuntimeError(f"{where} failed on 5")

    middle = boom if where == "middle" else (lambda i: None)
    last = boom if where == "last" else seen.append
    with pytest.raises(RuntimeError, match=f"{where} failed on 5"):
        run_overlapped(iter(range(10_000)), middle, last, depth=2)
    assert threading.active_count() < 10  # no thread left running


def test_a_failing_source_finishes_what_was_read_then_raises():
    def items():
        yield from range(4)
        raise OSError("disk gone")

    seen = []
    with pytest.raises(OSError, match="disk gone"):
        run_overlapped(items(), lambda i: None, seen.append, depth=2)
    assert seen == [0, 1, 2, 3]


class _Live(Source):
    """A camera stand-in: `n` frames as fast as possible, then (optionally) a stall."""

    kind = "camera"
    live = True

    def __init__(self, n, stall=None, gate=None):
        super().__init__("fake0")
        self.n, self.stall, self.gate = n, stall, gate

    @classmethod
    def claims(cls, spec):
        return False

    def _frames(self):
        for i in range(self.n):
            yield i, split_frame(value=i % 250)
        if self.gate is not None:
            self.gate.set()
        if self.stall is not None:
            self.stall.wait(30)
        self.stop_reason = "camera fake0 stopped"


def test_live_feed_drops_the_oldest_frames_when_behind():
    gate = threading.Event()
    feed = FrameFeed(_Live(10, gate=gate), live_buffer=3, stall_timeout=5)
    it = iter(feed)
    # Consumer is "behind": it takes nothing until the camera has delivered all 10 frames.
    first = next(it)
    assert gate.wait(5)
    rest = [c.frame_id for c in it]
    feed.close()
    got = [first.frame_id, *rest]
    assert feed.dropped == 10 - len(got) and feed.dropped >= 6
    assert got[-3:] == [7, 8, 9]  # the newest survive
    assert got == sorted(got)


def test_a_stalled_camera_stops_cleanly_with_the_partial_report(tmp_path):
    release = threading.Event()
    try:
        res = run(
            make_artifact(tmp_path),
            _Live(5, stall=release),
            progress=False,
            warmup=0,
            stall_timeout=0.3,
            report=str(tmp_path / "lat.json"),
        )
    finally:
        release.set()
    info = res.report.info
    assert info.frames_processed + info.frames_dropped == 5
    assert "delivered no frame for 0.3 s (stalled)" in info.stop_reason
    assert info.queue_depth == 1  # a live source keeps fewer (older) batches in flight
    saved = json.loads((tmp_path / "lat.json").read_text())
    assert saved["info"]["stop_reason"] == info.stop_reason


def test_file_sources_never_drop_even_when_the_pipeline_is_slow(tmp_path):
    art = make_artifact(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = run(art, [split_frame() for _ in range(12)], progress=False, warmup=0, batch=3)
    assert res.report.info.frames_processed == 12 and res.report.info.frames_dropped == 0
    assert res.report.info.queue_depth == 2


class _FlakyCapture:
    """cv2.VideoCapture stand-in: frames 0..9, where 3 and 4 fail to decode."""

    def __init__(self):
        self.i = 0

    def read(self):
        i, self.i = self.i, self.i + 1
        if i >= 10 or i in (3, 4):
            return False, None
        return True, np.full((8, 8, 3), i, np.uint8)

    def get(self, prop):
        return 10.0 if prop == cv2.CAP_PROP_FRAME_COUNT else 25.0

    def release(self):
        pass


def test_undecodable_video_frames_are_skipped_counted_and_named():
    src = VideoFileSource("drive.mp4")
    src._cap = _FlakyCapture()
    src._first = src._cap.read()[1]
    with pytest.warns(
        FrameFormatWarning, match=r"frames 3\.\.4 of drive\.mp4 could not be decoded"
    ):
        got = [(i, int(img[0, 0, 0])) for i, img in src]
    assert got == [(0, 0), (1, 1), (2, 2), (5, 5), (6, 6), (7, 7), (8, 8), (9, 9)]
    assert src.frames_skipped == 2 and src.stop_reason == "end of video"


def test_cli_names_and_counts_an_undecodable_image_mid_stream(tmp_path, capsys):
    from runtime.cli import main

    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(5):
        cv2.imwrite(str(folder / f"{i:03d}.jpg"), split_frame())
    (folder / "002.jpg").write_bytes(b"not a jpeg")
    report = tmp_path / "r.json"
    art = make_artifact(tmp_path)
    args = [str(art), "--source", str(folder), "--report", str(report), "--quiet"]
    with pytest.warns(FrameFormatWarning, match=r"skipping .*002\.jpg"):
        assert main(args) == 0  # (the CLI prints warnings as "warning: ..." lines)
    info = json.loads(report.read_text())["info"]
    assert (info["frames_processed"], info["frames_skipped"]) == (4, 1)
