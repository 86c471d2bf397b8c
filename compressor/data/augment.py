"""Training augmentations applied identically to image, boxes and both masks (YOLOP's recipe:
random affine, HSV jitter, horizontal flip), on the letterboxed sample.

Geometry uses the pixel-edge convention for boxes (pixel i spans [i, i+1)) and converts the
affine matrix to OpenCV's pixel-centre convention before warping, so a box that bounds a mask
region before the warp still bounds it (to rounding) after it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from compressor.data.errors import DataConfigError
from runtime.spec import PAD_VALUE


@dataclass(frozen=True)
class AugmentConfig:
    hsv_h: float = 0.015
    hsv_s: float = 0.7
    hsv_v: float = 0.4
    flip_prob: float = 0.5
    degrees: float = 10.0
    translate: float = 0.1
    scale: float = 0.25
    shear: float = 0.0
    min_box_px: float = 2.0
    min_area_ratio: float = 0.1
    max_aspect: float = 20.0

    def validate(self) -> None:
        checks = {
            "hsv_h": 0 <= self.hsv_h <= 0.5,
            "hsv_s": 0 <= self.hsv_s <= 1,
            "hsv_v": 0 <= self.hsv_v <= 1,
            "flip_prob": 0 <= self.flip_prob <= 1,
            "degrees": 0 <= self.degrees <= 180,
            "translate": 0 <= self.translate <= 0.5,
            "scale": 0 <= self.scale < 1,
            "shear": 0 <= self.shear < 45,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            got = ", ".join(f"{k}={getattr(self, k)}" for k in bad)
            raise DataConfigError(
                f"augmentation value out of range: {got}; expected hsv_h in [0, 0.5], hsv_s/hsv_v/"
                f"flip_prob in [0, 1], degrees in [0, 180], translate in [0, 0.5], scale in "
                f"[0, 1), shear in [0, 45)"
            )


def random_affine_matrix(hw: tuple[int, int], cfg: AugmentConfig, rng: np.random.Generator):
    """2x3 matrix in pixel-edge coordinates: centre, rotate+scale, shear, translate back (+jitter)."""
    h, w = hw
    centre = np.array([[1, 0, -w / 2], [0, 1, -h / 2], [0, 0, 1]], dtype=np.float64)
    angle = rng.uniform(-cfg.degrees, cfg.degrees)
    s = rng.uniform(1 - cfg.scale, 1 + cfg.scale)
    rot = np.eye(3)
    rot[:2] = cv2.getRotationMatrix2D((0, 0), angle, s)
    shear = np.eye(3)
    shear[0, 1] = math.tan(math.radians(rng.uniform(-cfg.shear, cfg.shear)))
    shear[1, 0] = math.tan(math.radians(rng.uniform(-cfg.shear, cfg.shear)))
    move = np.eye(3)
    move[0, 2] = rng.uniform(0.5 - cfg.translate, 0.5 + cfg.translate) * w
    move[1, 2] = rng.uniform(0.5 - cfg.translate, 0.5 + cfg.translate) * h
    return (move @ shear @ rot @ centre)[:2], s


def _to_cv_matrix(m: np.ndarray) -> np.ndarray:
    """Edge-convention affine -> OpenCV's centre convention (q = p - 0.5)."""
    a, b = m[:, :2], m[:, 2]
    return np.concatenate([a, (b + a @ np.array([0.5, 0.5]) - 0.5)[:, None]], axis=1)


def transform_boxes(boxes: np.ndarray, m: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Affine-map xyxy boxes by their 4 corners; the result is the corners' bounding box, clipped."""
    if len(boxes) == 0:
        return boxes.reshape(0, 4).astype(np.float64)
    b = boxes.astype(np.float64)
    corners = np.stack(
        [b[:, [0, 1]], b[:, [2, 1]], b[:, [2, 3]], b[:, [0, 3]]], axis=1
    )  # (K, 4, 2)
    mapped = corners @ m[:, :2].T + m[:, 2]
    out = np.concatenate([mapped.min(1), mapped.max(1)], axis=1)
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, hw[1])
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, hw[0])
    return out


def keep_boxes(
    before: np.ndarray, after: np.ndarray, gain: float, cfg: AugmentConfig
) -> np.ndarray:
    """Boolean mask of boxes still worth learning from: not too thin, not mostly cut off."""
    w0, h0 = before[:, 2] - before[:, 0], before[:, 3] - before[:, 1]
    w1, h1 = after[:, 2] - after[:, 0], after[:, 3] - after[:, 1]
    aspect = np.maximum(w1 / np.maximum(h1, 1e-9), h1 / np.maximum(w1, 1e-9))
    area_ratio = (w1 * h1) / np.maximum(w0 * h0 * gain * gain, 1e-9)
    return (
        (w1 > cfg.min_box_px)
        & (h1 > cfg.min_box_px)
        & (area_ratio > cfg.min_area_ratio)
        & (aspect < cfg.max_aspect)
    )


def random_affine(
    image: np.ndarray,
    boxes: np.ndarray,
    classes: np.ndarray,
    masks: tuple[np.ndarray, ...],
    cfg: AugmentConfig,
    rng: np.random.Generator,
):
    """Warp image (pad grey), masks (nearest, pad background) and boxes with one random matrix."""
    hw = image.shape[:2]
    m, gain = random_affine_matrix(hw, cfg, rng)
    m_cv = _to_cv_matrix(m)
    size = (hw[1], hw[0])
    pad = (PAD_VALUE,) * 3
    image = cv2.warpAffine(image, m_cv, size, flags=cv2.INTER_LINEAR, borderValue=pad)
    masks = tuple(
        cv2.warpAffine(mk, m_cv, size, flags=cv2.INTER_NEAREST, borderValue=0) for mk in masks
    )
    new_boxes = transform_boxes(boxes, m, hw)
    keep = keep_boxes(boxes.reshape(-1, 4), new_boxes, gain, cfg)
    return image, new_boxes[keep], classes[keep], masks


def hsv_jitter(image: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Random gains on hue, saturation and value through lookup tables (RGB uint8 in and out)."""
    gains = rng.uniform(-1, 1, 3) * np.array([cfg.hsv_h, cfg.hsv_s, cfg.hsv_v]) + 1
    hue, sat, val = cv2.split(cv2.cvtColor(image, cv2.COLOR_RGB2HSV))
    x = np.arange(256, dtype=np.float64)
    lut_h = ((x * gains[0]) % 180).astype(np.uint8)
    lut_s = np.clip(x * gains[1], 0, 255).astype(np.uint8)
    lut_v = np.clip(x * gains[2], 0, 255).astype(np.uint8)
    hsv = cv2.merge((cv2.LUT(hue, lut_h), cv2.LUT(sat, lut_s), cv2.LUT(val, lut_v)))
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def hflip(image: np.ndarray, boxes: np.ndarray, masks: tuple[np.ndarray, ...]):
    w = image.shape[1]
    out = boxes.copy()
    out[:, 0], out[:, 2] = w - boxes[:, 2], w - boxes[:, 0]
    flipped = tuple(np.ascontiguousarray(mk[:, ::-1]) for mk in masks)
    return np.ascontiguousarray(image[:, ::-1]), out, flipped


def augment_sample(
    image: np.ndarray,
    boxes: np.ndarray,
    classes: np.ndarray,
    masks: tuple[np.ndarray, ...],
    cfg: AugmentConfig,
    rng: np.random.Generator,
):
    """Affine, then HSV, then flip (YOLOP's order). Returns (image, boxes, classes, masks)."""
    image, boxes, classes, masks = random_affine(image, boxes, classes, masks, cfg, rng)
    if cfg.hsv_h or cfg.hsv_s or cfg.hsv_v:
        image = hsv_jitter(image, cfg, rng)
    if rng.random() < cfg.flip_prob:
        image, boxes, masks = hflip(image, boxes, masks)
    return image, boxes, classes, masks
