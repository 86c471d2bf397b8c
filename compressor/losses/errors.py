"""Errors of every task loss (each model's loss raises these)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from runtime.errors import MtcError


class LossConfigError(MtcError):
    """A loss weight or option outside its valid range, or an option the model's loss lacks."""


class LossInputError(MtcError):
    """Model outputs or batch do not have the shapes the loss expects."""


def check_non_negative(options: Any, what: str = "loss option") -> None:
    """Every field of a loss-options dataclass is a non-negative number (a tuple: each value)."""
    for name, value in asdict(options).items():
        values = value if isinstance(value, tuple) else (value,)
        if any(not isinstance(v, int | float) or v < 0 for v in values):
            raise LossConfigError(
                f"{what} {name}={value!r} must be a non-negative number; use 0 to switch a term off"
            )
