"""mtc compressor: multi-task models, data, training, task-aware pruning and distillation."""

import sys as _sys
from pathlib import Path as _Path

from runtime.cli_kernel import require_torch as _require_torch

# The base install (`pip install .`) is the torch-free runtime: name the extra, not a bare
# ModuleNotFoundError, when a compressor command or `import compressor` runs there.
_prog = _Path(_sys.argv[0]).name if _sys.argv and _sys.argv[0] else ""
_require_torch(_prog if _prog.startswith("mtc-") else "the compressor package")

from compressor.checkpoint import Checkpoint, load_checkpoint, save_checkpoint  # noqa: E402
from compressor.distill import distill  # noqa: E402
from compressor.models import build_model, list_models, register_model  # noqa: E402
from compressor.pruning import prune  # noqa: E402

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
