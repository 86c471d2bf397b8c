"""mtc compressor: multi-task models, data, training, task-aware pruning and distillation."""

from compressor.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from compressor.models import build_model, list_models, register_model

__all__ = [
    "Checkpoint",
    "build_model",
    "list_models",
    "load_checkpoint",
    "register_model",
    "save_checkpoint",
]
