from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest

from runtime import sources
from runtime.sources import FrameFormatWarning, SourceError, open_source


def test_grayscale_and_bgra_frames_are_converted_with_one_warning_each():
    gray = np.full((10, 12), 77, np.uint8)
    bgra = np.zeros((10, 12, 4), np.uint8)
    bgra[..., 0] = 5
    with pytest.warns(FrameFormatWarning) as record:
        got = list(open_source([gray, gray, bgra, bgra[..., :3], gray[..., None], bgra]))
    assert len(record) == 2  # grayscale once (2-D and HxWx1 alike), BGRA once
    assert [f.shape for _, f in got] == [(10, 12, 3)] * 6
    assert (got[0][1] == 77).all() and (got[2][1][..., 0] == 5).all()
    assert [fid for fid, _ in got] == list(range(6))


def test_bad_frames_raise_with_what_was_expected():
    with pytest.raises(SourceError, match="dtype float32; expected uint8"):
        list(open_source([np.zeros((4, 4, 3), np.float32)]))
    with pytest.raises(SourceError, match=r"shape \[4, 4, 2\]"):
        list(open_source([np.zeros((4, 4, 2), np.uint8)]))


def test_mp4_round_trip(tmp_path):
    path = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 10, (64, 48))
    for i in range(5):
        writer.write(np.full((48, 64, 3), 40 * i, np.uint8))
    writer.release()
    with open_source(str(path)) as src:
        assert src.kind == "video" and src.length == 5 and src.fps == pytest.approx(10)
        frames = list(src)
    assert [fid for fid, _ in frames] == [0, 1, 2, 3, 4]
    assert frames[0][1].shape == (48, 64, 3)
    assert abs(int(frames[4][1].mean()) - 160) < 10  # content survived the codec
    assert src.stop_reason == "end of video" and src.frames_read == 5


def test_unreadable_video_is_a_clear_error(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video" * 100)
    with pytest.raises(SourceError, match=r"cannot read video .*broken\.mp4.*ffmpeg"):
        open_source(str(bad))


def test_image_folder_and_glob(tmp_path):
    for name in ("b.png", "a.jpg"):
        cv2.imwrite(str(tmp_path / name), np.full((8, 8, 3), 9, np.uint8))
    (tmp_path / "c.png").write_bytes(b"junk")
    (tmp_path / "notes.txt").write_text("x")
    src = open_source(str(tmp_path))
    with pytest.warns(FrameFormatWarning, match="c.png"):
        ids = [fid for fid, _ in src]
    assert ids == ["a.jpg", "b.png"] and src.frames_skipped == 1
    assert src.stop_reason == "end of images"
    assert [fid for fid, _ in open_source(str(tmp_path / "*.jpg"))] == ["a.jpg"]
    with pytest.raises(SourceError, match="no images"):
        open_source(str(tmp_path / "*.bmp"))


def test_spec_resolution():
    assert sources.CameraSource.claims("0") and sources.CameraSource.claims(1)
    assert sources.StreamSource.claims("rtsp://cam/1") and not sources.CameraSource.claims("a")
    with pytest.raises(SourceError, match="not a camera index"):
        open_source("/no/such/file.mp4")


class _FlakyCapture:
    """A camera that delivers 3 frames, then drops out."""

    def __init__(self, target):
        self.left = 3

    def isOpened(self):
        return True

    def read(self):
        self.left -= 1
        return (True, np.zeros((4, 4, 3), np.uint8)) if self.left >= 0 else (False, None)

    def get(self, prop):
        return 0.0

    def release(self):
        pass


def test_camera_disconnect_stops_cleanly(monkeypatch):
    monkeypatch.setattr(sources.cv2, "VideoCapture", _FlakyCapture)
    src = open_source("0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(list(src)) == 3
    assert "camera 0 stopped delivering frames after 3 frames" in src.stop_reason
