"""Head-agnostic feature distillation: a frozen teacher's tap features (backbone / neck) taught to
a pruned student through 1x1 adapters, beside the student's own task losses."""

from compressor.distill.adapters import Adapter, build_adapters
from compressor.distill.config import FEATURE_LOSSES, DistillConfig, DistillConfigError
from compressor.distill.distiller import DistillExtension, DistillResult, distill
from compressor.distill.losses import build_feature_loss
from compressor.distill.taps import Tap, TapError, TapMismatchError, check_alignment, probe_taps

__all__ = [
    "FEATURE_LOSSES",
    "Adapter",
    "DistillConfig",
    "DistillConfigError",
    "DistillExtension",
    "DistillResult",
    "Tap",
    "TapError",
    "TapMismatchError",
    "build_adapters",
    "build_feature_loss",
    "check_alignment",
    "distill",
    "probe_taps",
]
