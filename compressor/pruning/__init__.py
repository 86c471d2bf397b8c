"""Task-aware safe structural pruning for any multi-task model.

The folder reads graph -> group -> importance -> pruner: `graph` traces Torch-Pruning's DepGraph
and yields our ChannelGroups, `calibrate` collects per-task gradients, `importance` scores a group,
`plan` turns scores into a target-exact cut, `pruner.prune` executes it, `record`/`report` say
what was kept."""

from compressor.pruning.config import PruneConfig
from compressor.pruning.errors import (
    CalibrationError,
    ImpossibleTargetError,
    ProtectedLayerError,
    PruneConfigError,
    PruningGraphError,
)
from compressor.pruning.importance import (
    list_importances,
    register_importance,
    unregister_importance,
)
from compressor.pruning.pruner import PruneResult, group_scores, prune
from compressor.pruning.report import PruneReport

__all__ = [
    "CalibrationError",
    "ImpossibleTargetError",
    "PruneConfig",
    "PruneConfigError",
    "PruneReport",
    "PruneResult",
    "ProtectedLayerError",
    "PruningGraphError",
    "group_scores",
    "list_importances",
    "prune",
    "register_importance",
    "unregister_importance",
]
