"""Errors of the pruning stage. Each is a user-fixable MtcError: CLIs print it as one line."""

from __future__ import annotations

from runtime.errors import MtcError


class PruneConfigError(MtcError):
    """A PruneConfig value outside its valid range (ratio, round_to, importance name, ...)."""


class ProtectedLayerError(MtcError):
    """A protected-layer name that matches no module of the model."""


class ImpossibleTargetError(MtcError):
    """The requested reduction cannot be reached with the protected layers and minimum widths."""


class CalibrationError(MtcError):
    """Calibration batches or the per-task loss callable are not usable."""


class PruningGraphError(MtcError):
    """The model could not be traced, or the pruned model no longer runs."""
