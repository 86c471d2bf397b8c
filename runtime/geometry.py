"""Letterbox geometry, shared by the data loader, the metrics and the runtime (pure numpy/OpenCV).

One `Letterbox` describes how a source frame maps onto the network input: scale, then pad. Every
coordinate mapping in the project (labels in, predictions out) goes through it, so training,
evaluation and deployment agree to the pixel.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from runtime.spec import PAD_VALUE


@dataclass(frozen=True)
class Letterbox:
    """Source (src_h, src_w) -> resized (new_h, new_w) -> padded to (out_h, out_w).

    pad_top/pad_left are the offsets of the resized content inside the output. YOLOP's protocol:
    1280x720 -> 640x360 -> 12 rows top and bottom -> 640x384.
    """

    src_h: int
    src_w: int
    out_h: int
    out_w: int
    new_h: int
    new_w: int
    pad_top: int
    pad_left: int
    scale: float

    @property
    def pad_bottom(self) -> int:
        return self.out_h - self.new_h - self.pad_top

    @property
    def pad_right(self) -> int:
        return self.out_w - self.new_w - self.pad_left

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Letterbox:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


def stretch_params(src_hw: tuple[int, int], out_hw: tuple[int, int]) -> Letterbox:
    """A plain resize expressed as a Letterbox without padding (models whose preprocessing says
    `letterbox: false`); masks map back exactly, boxes exactly when the aspect ratio is kept
    (one scale; BDD100K's 16:9 frames to 640x360)."""
    (src_h, src_w), (out_h, out_w) = src_hw, out_hw
    scale = min(out_h / src_h, out_w / src_w)
    return Letterbox(src_h, src_w, out_h, out_w, out_h, out_w, 0, 0, scale)


def letterbox_params(src_hw: tuple[int, int], out_hw: tuple[int, int]) -> Letterbox:
    """Scale to fit `out_hw` keeping aspect ratio, centre, pad the rest."""
    src_h, src_w = int(src_hw[0]), int(src_hw[1])
    out_h, out_w = int(out_hw[0]), int(out_hw[1])
    if min(src_h, src_w, out_h, out_w) <= 0:
        raise ValueError(f"letterbox needs positive sizes, got src={src_hw} out={out_hw}")
    scale = min(out_h / src_h, out_w / src_w)
    new_h = min(out_h, int(round(src_h * scale)))
    new_w = min(out_w, int(round(src_w * scale)))
    pad_top = (out_h - new_h) // 2
    pad_left = (out_w - new_w) // 2
    return Letterbox(src_h, src_w, out_h, out_w, new_h, new_w, pad_top, pad_left, scale)


def letterbox_image(
    img: np.ndarray, lb: Letterbox, pad_value: int = PAD_VALUE, out: np.ndarray | None = None
) -> np.ndarray:
    """Resize (area/linear) and pad an HxWxC image; writes into `out` when given (no allocation)."""
    if img.shape[:2] != (lb.src_h, lb.src_w):
        raise ValueError(
            f"image is {img.shape[1]}x{img.shape[0]}, letterbox expects {lb.src_w}x{lb.src_h}"
        )
    interp = cv2.INTER_AREA if lb.scale < 1 else cv2.INTER_LINEAR
    resized = (
        img
        if (lb.new_h, lb.new_w) == img.shape[:2]
        else cv2.resize(img, (lb.new_w, lb.new_h), interpolation=interp)
    )
    if out is None:
        out = np.empty((lb.out_h, lb.out_w) + img.shape[2:], dtype=img.dtype)
    out[...] = pad_value
    out[lb.pad_top : lb.pad_top + lb.new_h, lb.pad_left : lb.pad_left + lb.new_w] = resized
    return out


def letterbox_mask(mask: np.ndarray, lb: Letterbox, pad_value: int = 0) -> np.ndarray:
    """Nearest-neighbour resize of a label mask, padded with `pad_value` (background)."""
    if mask.shape[:2] != (lb.src_h, lb.src_w):
        raise ValueError(
            f"mask is {mask.shape[1]}x{mask.shape[0]}, letterbox expects {lb.src_w}x{lb.src_h}"
        )
    resized = cv2.resize(mask, (lb.new_w, lb.new_h), interpolation=cv2.INTER_NEAREST)
    out = np.full((lb.out_h, lb.out_w) + mask.shape[2:], pad_value, dtype=mask.dtype)
    out[lb.pad_top : lb.pad_top + lb.new_h, lb.pad_left : lb.pad_left + lb.new_w] = resized
    return out


def crop_padding(arr: np.ndarray, lb: Letterbox) -> np.ndarray:
    """Remove the letterbox padding from the last two axes (..., out_h, out_w)."""
    return arr[..., lb.pad_top : lb.pad_top + lb.new_h, lb.pad_left : lb.pad_left + lb.new_w]


def unletterbox_mask(mask: np.ndarray, lb: Letterbox) -> np.ndarray:
    """Network-resolution mask (out_h, out_w) -> source resolution (src_h, src_w), nearest."""
    cropped = np.ascontiguousarray(crop_padding(mask, lb))
    return cv2.resize(cropped, (lb.src_w, lb.src_h), interpolation=cv2.INTER_NEAREST)


def boxes_to_letterbox(boxes_xyxy: np.ndarray, lb: Letterbox) -> np.ndarray:
    """Source-pixel xyxy boxes -> network-input pixel xyxy boxes."""
    b = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4).copy()
    b[:, [0, 2]] = b[:, [0, 2]] * (lb.new_w / lb.src_w) + lb.pad_left
    b[:, [1, 3]] = b[:, [1, 3]] * (lb.new_h / lb.src_h) + lb.pad_top
    return b


def boxes_from_letterbox(boxes_xyxy: np.ndarray, lb: Letterbox, clip: bool = True) -> np.ndarray:
    """Network-input pixel xyxy boxes -> source-pixel xyxy boxes (inverse of boxes_to_letterbox)."""
    b = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4).copy()
    b[:, [0, 2]] = (b[:, [0, 2]] - lb.pad_left) * (lb.src_w / lb.new_w)
    b[:, [1, 3]] = (b[:, [1, 3]] - lb.pad_top) * (lb.src_h / lb.new_h)
    if clip:
        b[:, [0, 2]] = b[:, [0, 2]].clip(0, lb.src_w)
        b[:, [1, 3]] = b[:, [1, 3]].clip(0, lb.src_h)
    return b
