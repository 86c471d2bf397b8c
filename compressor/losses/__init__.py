"""Task losses: callables `(outputs, batch) -> dict[task, scalar tensor]`."""

from compressor.losses.segmentation import (
    TWINLITE_LOSS,
    SegmentationLoss,
    SegTaskLoss,
    focal_loss,
)
from compressor.losses.yolop import (
    LossConfig,
    LossConfigError,
    LossInputError,
    YolopLoss,
    total_loss,
    tversky_loss,
)

__all__ = [
    "TWINLITE_LOSS",
    "SegTaskLoss",
    "SegmentationLoss",
    "focal_loss",
    "LossConfig",
    "LossConfigError",
    "LossInputError",
    "YolopLoss",
    "total_loss",
    "tversky_loss",
]
