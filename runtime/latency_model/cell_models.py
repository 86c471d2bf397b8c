"""How a layer's time depends on its kept (input, output) widths: candidate models over the
probe's measured grid, compared on cells the grid does not contain, and the channel-block test.

    additive   t(ci, co) = t(ci, F) + t(F, co) - t(F, F)    one-dimensional: each side alone
    separable  t(ci, co) = t(ci, F) * t(F, co) / t(F, F)    one-dimensional, multiplicative
    bilinear   t interpolated bilinearly on the (ci, co) grid: sees both sides together

(F = the layer's full width.) The one-dimensional models need only the grid's last row and
column; the bilinear one needs every cell. Which one a table uses is decided by measurement:
each probe that varies on both sides is also timed at a few held-out (ci, co) pairs on the
grid's step, and the model with the least time-weighted error on them is chosen
(`choose_model`); whole pruned networks measured beside the anchors are scored too and
recorded, but they are one or two numbers against dozens of cells."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

MODELS = ("additive", "separable", "bilinear")
DEFAULT_MODEL = "bilinear"  # what tables without held-out cells use (the only one before)
HOLDOUT_PER_PROBE = 2
STEP_CANDIDATES = (32, 16, 8, 4)
STEP_THRESHOLD = 0.2  # median position of an in-between width within its block; 0 = a step


def weights(grid: Sequence[int], x: float) -> tuple[int, int, float]:
    """Indices (i, j) and weight of j for linear interpolation at x; beyond the grid the nearest
    cell's line is extended (latency of a width below the smallest probe is extrapolated)."""
    if len(grid) == 1:
        return 0, 0, 0.0
    j = int(np.searchsorted(grid, x, side="left"))
    j = min(max(j, 1), len(grid) - 1)
    i = j - 1
    return i, j, (x - grid[i]) / (grid[j] - grid[i])


def interp(grid: Sequence[int], values: np.ndarray, x: float) -> float:
    i, j, t = weights(grid, x)
    return float(values[i] * (1 - t) + values[j] * t)


def cell_ms(
    model: str,
    grid_in: Sequence[int],
    grid_out: Sequence[int],
    ms: np.ndarray,
    ci: float,
    co: float,
) -> float:
    """A probe's predicted ms at (ci, co) under `model` (ms: [len(grid_in), len(grid_out)])."""
    if model == "bilinear" or len(grid_in) == 1 or len(grid_out) == 1:
        i, j, t = weights(grid_in, ci)
        return max(0.0, interp(grid_out, ms[i] * (1 - t) + ms[j] * t, co))
    by_out = interp(grid_out, ms[-1], co)  # full input width
    by_in = interp(grid_in, ms[:, -1], ci)  # full output width
    full = float(ms[-1, -1])
    if model == "additive":
        return max(0.0, by_out + by_in - full)
    if model == "separable":
        return max(0.0, by_out * by_in / full) if full > 0 else 0.0
    raise ValueError(f"unknown latency cell model {model!r}; valid: {', '.join(MODELS)}")


def holdout_pairs(grid_in: Sequence[int], grid_out: Sequence[int], step: int) -> list[list[int]]:
    """(ci, co) pairs on multiples of `step` that the grid does not contain, for probes that vary
    on both sides: one low-in/high-out and one high-in/low-out (where the two one-dimensional
    models and the bilinear one disagree most), deterministic."""
    if len(grid_in) < 2 or len(grid_out) < 2:
        return []
    ins, outs = _off_grid(grid_in, step), _off_grid(grid_out, step)
    if not ins and not outs:
        return []
    # off the grid on one side at least; the other side may take the grid's interior widths
    ins, outs = ins or list(grid_in[1:-1]), outs or list(grid_out[1:-1])
    if not ins or not outs:
        return []
    pairs = {(ins[len(ins) // 3], outs[(2 * len(outs)) // 3])}
    pairs.add((ins[(2 * len(ins)) // 3], outs[len(outs) // 3]))
    return [list(p) for p in sorted(pairs)][:HOLDOUT_PER_PROBE]


def _off_grid(grid: Sequence[int], step: int) -> list[int]:
    """Multiples of step strictly inside the grid's range that are not grid widths."""
    lo, hi = grid[0], grid[-1]
    return [w for w in range(step * (lo // step + 1), hi, step) if w not in grid]


def model_errors(
    cells: Iterable[tuple[str, float, float, float, float]],
    predict: Mapping[str, object],
) -> dict[str, dict[str, float]]:
    """Per model: time-weighted absolute and signed relative error over held-out cells.
    cells: (probe, ci, co, measured ms, weight); predict[model](probe, ci, co) -> ms."""
    rows = list(cells)
    out: dict[str, dict[str, float]] = {}
    total = sum(ms * w for _, _, _, ms, w in rows)
    for name, fn in predict.items():
        diffs = [(fn(p, ci, co) - ms) * w for p, ci, co, ms, w in rows]  # type: ignore[operator]
        out[name] = {
            "abs": round(sum(abs(d) for d in diffs) / total, 5) if total > 0 else 0.0,
            "signed": round(sum(diffs) / total, 5) if total > 0 else 0.0,
        }
    return out


def choose_model(errors: Mapping[str, Mapping[str, float]]) -> str:
    """The model with the least held-out error (ties: the earlier, simpler one in MODELS)."""
    if not errors:
        return DEFAULT_MODEL
    return min(MODELS, key=lambda m: (errors[m]["abs"], MODELS.index(m)))


def step_widths(cout: int) -> list[int]:
    """Output widths of the channel-step sweep: every multiple of 4 from 16 to 96 (or cout)."""
    return list(range(16, min(cout, 96) + 1, 4))


def detect_block(ms_at: Mapping[int, float]) -> tuple[int | None, dict[int, float]]:
    """The backend's channel block from a sweep of output widths: the largest candidate b whose
    in-between widths cost what the next multiple of b costs. For each width w between two
    multiples of b, r = (t(up) - t(w)) / (t(up) - t(down)) is 0 on a step and about the distance
    to the next multiple on a smooth backend; b is taken when the median r is below
    STEP_THRESHOLD. 1 = measured, no steps; None = the sweep cannot tell (too few widths)."""
    scores: dict[int, float] = {}
    for b in STEP_CANDIDATES:
        rs = []
        for w, t in ms_at.items():
            down, up = w // b * b, (w // b + 1) * b
            if w % b == 0 or down not in ms_at or up not in ms_at:
                continue
            span = ms_at[up] - ms_at[down]
            if span > 1e-9:
                rs.append((ms_at[up] - t) / span)
        if len(rs) >= 2:
            scores[b] = round(statistics.median(rs), 3)
    if not scores:
        return None, scores
    for b in STEP_CANDIDATES:
        if b in scores and scores[b] < STEP_THRESHOLD:
            return b, scores
    return 1, scores
