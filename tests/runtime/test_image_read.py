"""Truncated images are caught (cv2.imread decodes them partly and silently): the decode check,
mtc-run skipping and counting them, and the overlay note for boxes below its threshold."""

from __future__ import annotations

import os
import time
import warnings

import cv2
import numpy as np
import pytest
from runtime_helpers import make_artifact, split_frame

from runtime.fileio import remove_stale_temps
from runtime.image_read import ImageDecodeError, decode_image, file_truncation, read_image
from runtime.overlay import draw_overlay, hidden_boxes_note
from runtime.pipeline import run
from runtime.postprocess import FrameResult


def _encoded(ext: str) -> bytes:
    img = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(ext, img)
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize("ext, kind", [(".jpg", "JPEG"), (".png", "PNG")])
def test_truncated_files_are_named_errors_and_whole_ones_decode(tmp_path, ext, kind):
    data = _encoded(ext)
    assert decode_image(data).shape == (60, 80, 3)
    assert decode_image(data + b"\0" * 100).shape == (60, 80, 3)  # padding after the end: fine
    cut = tmp_path / f"cut{ext}"
    cut.write_bytes(data[: len(data) * 2 // 3])
    if ext == ".jpg":
        assert cv2.imread(str(cut)) is not None  # what OpenCV alone does: a partial image
    with pytest.raises(ImageDecodeError, match=f"cut{ext}: truncated {kind}"):
        read_image(cut)
    assert file_truncation(cut).startswith(f"truncated {kind}")
    whole = tmp_path / f"whole{ext}"
    whole.write_bytes(data)
    assert file_truncation(whole) is None
    junk = tmp_path / f"junk{ext}"
    junk.write_bytes(os.urandom(100))
    with pytest.raises(ImageDecodeError, match="cannot decode"):
        read_image(junk)


def test_run_skips_and_counts_truncated_frames_naming_the_file(tmp_path):
    art = make_artifact(tmp_path)
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        cv2.imwrite(str(frames / f"f{i}.jpg"), split_frame())
    data = (frames / "f1.jpg").read_bytes()
    (frames / "f1.jpg").write_bytes(data[: len(data) // 2])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = run(art, str(frames), progress=False)
    assert [r.frame_id for r in res.results] == ["f0.jpg", "f2.jpg"]
    assert res.report.info.frames_skipped == 1
    assert any("f1.jpg: truncated JPEG" in str(w.message) for w in caught)


def test_overlay_says_when_every_box_is_below_its_threshold():
    frame = np.zeros((40, 60, 3), np.uint8)
    low = FrameResult(
        "a",
        np.array([[1, 1, 20, 20]], np.float32),
        np.array([0.1], np.float32),
        np.array([0]),
        None,
        None,
    )
    assert hidden_boxes_note(low, 0.25) == "1 boxes, all below overlay threshold 0.25 (best 0.10)"
    assert draw_overlay(frame, low).any()  # the note is drawn on the image
    high = FrameResult("b", low.boxes, np.array([0.9], np.float32), low.classes, None, None)
    assert hidden_boxes_note(high, 0.25) is None
    empty = FrameResult(
        "c",
        np.zeros((0, 4), np.float32),
        np.zeros(0, np.float32),
        np.zeros(0, np.int64),
        None,
        None,
    )
    assert hidden_boxes_note(empty, 0.25) is None and not draw_overlay(frame, empty).any()


def test_stale_temp_files_of_our_naming_are_removed(tmp_path):
    final = tmp_path / "x.mp4"
    stale = tmp_path / ".x.mp4.abcd1234.mp4"
    fresh = tmp_path / ".x.mp4.zzzz9999.mp4"
    other = tmp_path / ".x.mp4.notours.mp4"
    for p in (stale, fresh, other):
        p.write_bytes(b"partial")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    assert remove_stale_temps(final, ".mp4") == [stale]
    assert fresh.exists() and other.exists() and not stale.exists()
