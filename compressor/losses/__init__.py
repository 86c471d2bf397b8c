"""Task losses: callables `(outputs, batch) -> dict[task, scalar tensor]`."""

from compressor.losses.yolop import (
    LossConfig,
    LossConfigError,
    LossInputError,
    YolopLoss,
    total_loss,
    tversky_loss,
)

__all__ = [
    "LossConfig",
    "LossConfigError",
    "LossInputError",
    "YolopLoss",
    "total_loss",
    "tversky_loss",
]
