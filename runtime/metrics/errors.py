"""Input errors of the metric code and the strict mode lookup both evaluators use.

Metrics are the last stage of an evaluation that may have run for hours; a wrong shape or an
unknown mode must fail at the first `update` with a message that says how to fix the call, not
as a numpy broadcasting error at `compute` time.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import TypeVar

import numpy as np

from runtime.errors import MtcError

T = TypeVar("T")


class MetricsInputError(MtcError, ValueError):
    """An array given to an evaluator has the wrong shape, dtype or values."""


class UnknownModeError(MtcError, KeyError):
    """A metric mode name that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


def resolve_mode(registry: Mapping[str, T], name: str, what: str) -> T:
    """Strict registry lookup: an unknown name lists the valid ones and the closest match."""
    if name in registry:
        return registry[name]
    valid = sorted(registry)
    close = difflib.get_close_matches(str(name), valid, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise UnknownModeError(f"unknown {what} mode {name!r}; valid modes: {valid}.{hint}")


def as_array(x: object, name: str, ndim: int, last: int | None = None) -> np.ndarray:
    """`x` as an ndarray of `ndim` dims (and `last` columns); an empty list counts as empty."""
    arr = np.asarray(x)
    if arr.size == 0 and last is not None:
        return arr.reshape((0,) * (ndim - 1) + (last,))
    if arr.size == 0 and ndim == 1:
        return arr.reshape(0)
    if arr.ndim != ndim or (last is not None and arr.shape[-1] != last):
        want = "(N,)" if ndim == 1 else f"(N, {last})"
        raise MetricsInputError(f"{name} must have shape {want}, got shape {arr.shape}")
    return arr


def as_float(x: object, name: str, ndim: int, last: int | None = None) -> np.ndarray:
    """Finite float64 copy; NaN/inf in a box or a score would silently poison every sort."""
    arr = as_array(x, name, ndim, last)
    if arr.dtype.kind not in "biuf":
        raise MetricsInputError(f"{name} must be numeric, got dtype {arr.dtype}")
    out = np.array(arr, dtype=np.float64)
    if not np.isfinite(out).all():
        raise MetricsInputError(f"{name} contains NaN or inf values")
    return out


def as_labels(x: object, name: str, ndim: int, num_classes: int) -> np.ndarray:
    """Integer class ids in [0, num_classes); float ids are accepted when they are integral
    (postprocess outputs carry the class in a float column)."""
    arr = as_array(x, name, ndim)
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or (arr != np.round(arr)).any():
            raise MetricsInputError(f"{name} must hold integer class ids, got non-integral floats")
    elif arr.dtype.kind not in "biu":
        raise MetricsInputError(f"{name} must hold integer class ids, got dtype {arr.dtype}")
    out = arr.astype(np.int64)
    if out.size and (out.min() < 0 or out.max() >= num_classes):
        raise MetricsInputError(
            f"{name} must be in [0, {num_classes}), got values in [{out.min()}, {out.max()}]; "
            "pass class_names with one entry per class"
        )
    return out
