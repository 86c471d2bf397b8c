"""Loader configuration: one frozen dataclass, validated once, so every consumer (training, eval,
DDP workers) sees the same resolved values."""

from __future__ import annotations

from dataclasses import dataclass

from compressor.data.augment import AugmentConfig
from compressor.data.errors import DataConfigError, LabelError
from compressor.data.labels import MaskMap, parse_mask_map
from runtime.spec import DEFAULT_INPUT_HW, IMAGENET_MEAN, IMAGENET_STD

LANE_LABEL_KINDS: tuple[str, ...] = ("wide", "thin")


@dataclass(frozen=True)
class DataConfig:
    """How samples are read and shaped.

    Augmentation defaults are YOLOP's (hsv 0.015/0.7/0.4, flip 0.5, rotation 10 deg, translate 0.1,
    scale 0.25, no shear); they only act when `augment` is True, i.e. for training.
    """

    input_hw: tuple[int, int] = DEFAULT_INPUT_HW
    augment: bool = False
    lane_labels: str = "wide"
    skip_unlabeled: bool = True
    skip_bad_images: bool = False  # drop samples whose image/mask is truncated (else an error)
    # The label check (compressor.data.labels): strict = clipped/dropped boxes and unknown
    # categories are an error, not a warning; mask_map = ("drivable:7=1", ...) reads raw mask
    # values outside the layout's classes as class 0/1 (else such a mask is refused).
    strict_labels: bool = False
    mask_map: tuple = ()
    hsv_h: float = 0.015
    hsv_s: float = 0.7
    hsv_v: float = 0.4
    flip_prob: float = 0.5
    degrees: float = 10.0
    translate: float = 0.1
    scale: float = 0.25
    shear: float = 0.0
    max_images: int | None = None
    layout: str = "auto"
    seed: int = 0
    # The model's preprocessing (its spec's): input = (pixels / 255 - mean) / std, channels in
    # `color` order. Mean 0 / std 1 for a model that takes [0, 1] input.
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    color: str = "RGB"
    letterbox: bool = True  # False: a plain resize to input_hw (no padding)

    @classmethod
    def for_preprocess(cls, preprocess: dict, **fields: object) -> DataConfig:
        """A config whose input_hw / mean / std / color / letterbox are a checkpoint's `preprocess`
        block."""
        taken = {
            k: tuple(v) if isinstance(v, list) else v
            for k in ("input_hw", "mean", "std", "color", "letterbox")
            if (v := preprocess.get(k)) is not None
        }
        return cls(**{**taken, **fields})  # type: ignore[arg-type]

    def __post_init__(self) -> None:
        hw = tuple(self.input_hw)
        if len(hw) != 2 or min(int(v) for v in hw) <= 0:
            raise DataConfigError(
                f"input_hw must be two positive ints (height, width), got {self.input_hw!r}; "
                f"e.g. (384, 640)"
            )
        object.__setattr__(self, "input_hw", (int(hw[0]), int(hw[1])))
        if self.color not in ("RGB", "BGR") or len(self.mean) != 3 or len(self.std) != 3:
            raise DataConfigError(
                f"color must be RGB or BGR and mean/std three numbers, got {self.color!r}, "
                f"{self.mean!r}, {self.std!r}"
            )
        if self.lane_labels not in LANE_LABEL_KINDS:
            raise DataConfigError(
                f"lane_labels must be one of {', '.join(LANE_LABEL_KINDS)}, got {self.lane_labels!r}"
            )
        if self.max_images is not None and self.max_images <= 0:
            raise DataConfigError(
                f"max_images must be a positive count or None (all images), got {self.max_images}"
            )
        object.__setattr__(self, "mask_map", _mask_map(self.mask_map))
        self.augment_config.validate()

    @property
    def augment_config(self) -> AugmentConfig:
        return AugmentConfig(
            hsv_h=self.hsv_h,
            hsv_s=self.hsv_s,
            hsv_v=self.hsv_v,
            flip_prob=self.flip_prob,
            degrees=self.degrees,
            translate=self.translate,
            scale=self.scale,
            shear=self.shear,
        )


def _mask_map(value: object) -> MaskMap:
    """mask_map as strings ("drivable:7=1") or parsed tuples -> parsed tuples."""
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if all(isinstance(v, tuple) and len(v) == 4 for v in items):
        return tuple(items)  # type: ignore[return-value]
    try:
        return parse_mask_map(str(v) for v in items)
    except LabelError as e:
        raise DataConfigError(str(e).replace("--mask-map", "mask_map", 1)) from None
