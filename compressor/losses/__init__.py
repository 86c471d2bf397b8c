"""Task losses: callables `(outputs, batch) -> dict[task, scalar tensor]`."""

from compressor.losses.errors import LossConfigError, LossInputError
from compressor.losses.segmentation import (
    TWINLITE_LOSS,
    SegmentationLoss,
    SegTaskLoss,
    TwinLiteLossConfig,
    focal_loss,
)
from compressor.losses.yolop import YolopLoss, YolopLossConfig, total_loss, tversky_loss

__all__ = [
    "TWINLITE_LOSS",
    "SegTaskLoss",
    "SegmentationLoss",
    "TwinLiteLossConfig",
    "focal_loss",
    "YolopLossConfig",
    "LossConfigError",
    "LossInputError",
    "YolopLoss",
    "total_loss",
    "tversky_loss",
]
