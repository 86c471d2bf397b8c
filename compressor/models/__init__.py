"""Built-in multi-task models and the strict registry. Importing this package registers them."""

from compressor.models import twinlitenet as _twinlitenet  # noqa: F401  (registers "twinlitenet")
from compressor.models import yolop as _yolop  # noqa: F401  (registers "yolop")
from compressor.models.common import FeatureInfo, freeze_bn
from compressor.models.registry import (
    DuplicateModelError,
    UnknownModelError,
    build_model,
    list_models,
    register_model,
)

__all__ = [
    "FeatureInfo",
    "freeze_bn",
    "build_model",
    "list_models",
    "register_model",
    "UnknownModelError",
    "DuplicateModelError",
]
