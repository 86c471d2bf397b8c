"""Errors of every task loss (each model's loss raises these)."""

from __future__ import annotations

from runtime.errors import MtcError


class LossConfigError(MtcError):
    """A loss weight or option outside its valid range, or an option the model's loss lacks."""


class LossInputError(MtcError):
    """Model outputs or batch do not have the shapes the loss expects."""
