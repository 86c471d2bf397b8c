from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest

from runtime.geometry import letterbox_params
from runtime.preprocess import PreprocessError, Preprocessor
from runtime.sidecar import PreprocessInfo
from runtime.spec import IMAGENET_MEAN, IMAGENET_STD

INFO = PreprocessInfo(input_hw=(48, 80), mean=IMAGENET_MEAN, std=IMAGENET_STD, letterbox=True)


def reference(img: np.ndarray, out_hw=(48, 80), color="RGB") -> np.ndarray:
    """The textbook version: resize, pad, colour, scale, normalise, transpose."""
    h, w = img.shape[:2]
    s = min(out_hw[0] / h, out_hw[1] / w)
    nh, nw = min(out_hw[0], round(h * s)), min(out_hw[1], round(w * s))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(img, (nw, nh), interpolation=interp) if (nh, nw) != (h, w) else img
    canvas = np.full((*out_hw, 3), 114, np.uint8)
    top, left = (out_hw[0] - nh) // 2, (out_hw[1] - nw) // 2
    canvas[top : top + nh, left : left + nw] = resized
    x = canvas[..., ::-1] if color == "RGB" else canvas
    x = (x.astype(np.float64) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return x.transpose(2, 0, 1).astype(np.float32)


def test_matches_the_reference_and_reuses_the_buffer():
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (72, 128, 3), dtype=np.uint8) for _ in range(3)]
    pre = Preprocessor(INFO, max_batch=4)
    batch, boxes = pre(frames)
    assert batch.shape == (3, 3, 48, 80) and batch.dtype == np.float32
    assert np.shares_memory(batch, pre.batch_buffer)
    for i, f in enumerate(frames):
        np.testing.assert_allclose(batch[i], reference(f), atol=1e-5)
    assert boxes[0] == letterbox_params((72, 128), (48, 80))
    again, _ = pre(frames[:1])
    assert np.shares_memory(again, batch)


def test_frame_size_changes_inside_one_batch():
    rng = np.random.default_rng(1)
    frames = [
        rng.integers(0, 256, hw + (3,), dtype=np.uint8) for hw in [(72, 128), (100, 60), (48, 80)]
    ]
    batch, boxes = Preprocessor(INFO, max_batch=3)(frames)
    for i, f in enumerate(frames):
        np.testing.assert_allclose(batch[i], reference(f), atol=1e-5)
    assert [(b.src_h, b.src_w) for b in boxes] == [(72, 128), (100, 60), (48, 80)]
    assert boxes[1].pad_left > 0 and boxes[0].pad_top > 0  # portrait pads sideways


def test_bgr_models_and_stretch_resize():
    img = np.random.default_rng(2).integers(0, 256, (60, 60, 3), dtype=np.uint8)
    bgr = Preprocessor(replace(INFO, color="BGR"), 1)([img])[0][0]
    np.testing.assert_allclose(bgr, reference(img, color="BGR"), atol=1e-5)
    stretched, (lb,) = Preprocessor(replace(INFO, letterbox=False), 1)([img])
    assert (lb.new_h, lb.new_w, lb.pad_top, lb.pad_left) == (48, 80, 0, 0)
    expect = cv2.resize(img, (80, 48), interpolation=cv2.INTER_AREA)[..., ::-1] / 255.0
    expect = ((expect - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)
    np.testing.assert_allclose(stretched[0], expect, atol=1e-5)


def test_rejects_what_it_cannot_batch():
    pre = Preprocessor(INFO, max_batch=2)
    with pytest.raises(PreprocessError, match="1..2"):
        pre([np.zeros((8, 8, 3), np.uint8)] * 3)
    with pytest.raises(PreprocessError, match="uint8 HxWx3"):
        pre([np.zeros((8, 8), np.uint8)])
