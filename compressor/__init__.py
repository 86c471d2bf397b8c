"""mtc compressor: multi-task models, data, training, task-aware pruning and distillation."""

import sys as _sys
from pathlib import Path as _Path

from runtime.cli_kernel import missing_extra as _missing_extra
from runtime.cli_kernel import one_line_excepthook as _one_line_excepthook

# The base install (`pip install .`) is the torch-free runtime: a compressor command or
# `import compressor` there gets one line naming the extra, not a bare ModuleNotFoundError.
try:
    import torch as _torch  # noqa: F401
except ModuleNotFoundError as _e:
    if (_e.name or "").split(".")[0] != "torch":
        raise
    _prog = _Path(_sys.argv[0]).name if _sys.argv and _sys.argv[0] else ""
    _one_line_excepthook()
    raise _missing_extra(
        _e, _prog if _prog.startswith("mtc-") else "the compressor package"
    ) from None

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
