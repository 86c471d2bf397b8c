"""Augmentations move image, boxes and masks together, and are reproducible from a seed."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from compressor.data import BddDataset, DataConfig
from compressor.data.augment import (
    AugmentConfig,
    augment_sample,
    hflip,
    hsv_jitter,
    keep_boxes,
    transform_boxes,
)
from compressor.data.errors import DataConfigError

STRONG = AugmentConfig(degrees=25, translate=0.1, scale=0.3, shear=8, flip_prob=0.5)


def _scene(rect=(70, 40, 150, 100), hw=(160, 240)):
    """Grey image with a red rectangle; its box and a mask of exactly its pixels."""
    x1, y1, x2, y2 = rect
    img = np.full((*hw, 3), 90, np.uint8)
    img[y1:y2, x1:x2] = (255, 0, 0)
    mask = np.zeros(hw, np.uint8)
    mask[y1:y2, x1:x2] = 1
    boxes = np.array([rect], np.float64)
    return img, boxes, np.zeros(1, np.int64), mask


def _mask_box(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)


@pytest.mark.parametrize("seed", range(12))
def test_affine_box_still_bounds_the_warped_mask(seed: int):
    img, boxes, classes, mask = _scene()
    out_img, out_boxes, _, (out_mask,) = augment_sample(
        img, boxes, classes, (mask,), STRONG, np.random.default_rng(seed)
    )
    assert out_boxes.shape == (1, 4)
    np.testing.assert_allclose(out_boxes[0], _mask_box(out_mask), atol=1.5)
    # The red pixels moved with the mask (edges interpolate: allow a 1 px rim). HSV jitter
    # changes the red but leaves grey grey, so "coloured" (chroma) tells them apart.
    red = out_img.max(2).astype(int) - out_img.min(2) > 30
    rim = cv2.dilate(out_mask, np.ones((3, 3), np.uint8)) - cv2.erode(out_mask, np.ones((3, 3)))
    assert not np.any(red & (out_mask == 0) & (rim == 0))
    assert not np.any(~red & (out_mask == 1) & (rim == 0))


def test_identity_settings_change_nothing():
    img, boxes, classes, mask = _scene()
    cfg = AugmentConfig(hsv_h=0, hsv_s=0, hsv_v=0, flip_prob=0, degrees=0, translate=0, scale=0)
    out_img, out_boxes, _, (out_mask,) = augment_sample(
        img, boxes, classes, (mask,), cfg, np.random.default_rng(0)
    )
    np.testing.assert_array_equal(out_img, img)
    np.testing.assert_array_equal(out_mask, mask)
    np.testing.assert_allclose(out_boxes, boxes)


def test_flip_mirrors_box_and_mask_exactly():
    img, boxes, _, mask = _scene(rect=(10, 20, 50, 60), hw=(100, 200))
    f_img, f_boxes, (f_mask,) = hflip(img, boxes, (mask,))
    np.testing.assert_array_equal(f_boxes[0], [150, 20, 190, 60])
    np.testing.assert_array_equal(_mask_box(f_mask), f_boxes[0])
    np.testing.assert_array_equal(f_img[:, ::-1], img)


def test_boxes_pushed_out_of_the_frame_are_dropped():
    _, boxes, _, _ = _scene(rect=(0, 0, 12, 12), hw=(160, 240))
    cfg = AugmentConfig()
    for shift, kept in ((-2, True), (-7, True), (-10, False)):
        m = np.array([[1.0, 0, shift], [0, 1.0, shift]])
        moved = transform_boxes(boxes, m, (160, 240))
        side = 12 + shift
        np.testing.assert_allclose(moved, [[0, 0, side, side]])
        assert keep_boxes(boxes, moved, 1.0, cfg)[0] == kept  # 2x2 px left: dropped


def test_hsv_value_gain_is_one_factor_for_every_pixel():
    rng = np.random.default_rng(3)
    img = rng.integers(40, 120, (32, 32, 3), dtype=np.uint8)
    cfg = AugmentConfig(hsv_h=0, hsv_s=0, hsv_v=0.5)
    out = hsv_jitter(img, cfg, np.random.default_rng(1))
    v_in = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)[..., 2].astype(float)
    v_out = cv2.cvtColor(out, cv2.COLOR_RGB2HSV)[..., 2].astype(float)
    ratio = v_out / v_in
    assert abs(ratio.mean() - 1) > 0.02 and ratio.std() < 0.03


def test_dataset_augmentation_is_seeded_by_index_and_epoch(synth_dataset):
    cfg = DataConfig(input_hw=(96, 160), augment=True, seed=5)
    a, b = BddDataset(synth_dataset, "train", cfg), BddDataset(synth_dataset, "train", cfg)
    np.testing.assert_array_equal(a[2]["image"], b[2]["image"])
    np.testing.assert_array_equal(a[2]["boxes"], b[2]["boxes"])
    b.set_epoch(1)
    assert not np.array_equal(a[2]["image"], b[2]["image"])
    plain = BddDataset(synth_dataset, "train", DataConfig(input_hw=(96, 160)))
    assert not np.array_equal(plain[2]["image"], a[2]["image"])
    np.testing.assert_array_equal(plain[2]["meta"]["boxes"], a[2]["meta"]["boxes"])


@pytest.mark.parametrize(("field", "value"), [("flip_prob", 2.0), ("scale", 1.0), ("degrees", -1)])
def test_out_of_range_augmentation_is_named(field: str, value: float):
    with pytest.raises(DataConfigError, match=f"{field}={value}"):
        DataConfig(**{field: value})
