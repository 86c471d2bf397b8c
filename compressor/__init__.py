"""mtc compressor: multi-task models, data, training, task-aware pruning and distillation."""

from compressor.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from compressor.distill import distill
from compressor.models import build_model, list_models, register_model
from compressor.pruning import prune

__all__ = [
    "Checkpoint",
    "build_model",
    "distill",
    "list_models",
    "load_checkpoint",
    "prune",
    "register_model",
    "save_checkpoint",
]
