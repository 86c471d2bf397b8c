"""Packing of matching units (an image, or an image x class) into padded numpy blocks.

Matching is sequential within a unit but independent across units; thousands of small units cost
more in Python calls than in arithmetic. Units of similar size are padded into
(units, detections, gts) blocks and matched together; detections whose IoU reaches no gt at the
lowest threshold can never match or take a gt, so they are dropped from the block first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

PAD_IOU = -1.0  # IoU written over padded or excluded pairs: below any threshold


@dataclass
class Block:
    det: np.ndarray  # (U, D) indices into the caller's detection arrays (0 where padded)
    det_ok: np.ndarray  # (U, D) real entry
    gt: np.ndarray  # (U, G)
    gt_ok: np.ndarray  # (U, G)

    @property
    def pair_ok(self) -> np.ndarray:
        return self.det_ok[:, :, None] & self.gt_ok[:, None, :]


def unit_blocks(det_unit: np.ndarray, gt_unit: np.ndarray, budget: int) -> Iterator[Block]:
    """Blocks over the units having both detections and gts; both inputs sorted by unit, each
    unit's entries contiguous and in the order matching must see them."""
    units, d_start, d_count = np.unique(det_unit, return_index=True, return_counts=True)
    g_start = np.searchsorted(gt_unit, units, side="left")
    g_count = np.searchsorted(gt_unit, units, side="right") - g_start
    sel = np.flatnonzero(g_count > 0)
    sel = sel[np.lexsort((d_count[sel], g_count[sel]))]  # similar shapes share a block
    ds, dc, gs, gc = d_start[sel], d_count[sel], g_start[sel], g_count[sel]
    for a, b, dm, gm in _ranges(dc.tolist(), gc.tolist(), budget):
        d_idx, d_ok = _padded(ds[a:b], dc[a:b], dm)
        g_idx, g_ok = _padded(gs[a:b], gc[a:b], gm)
        yield Block(d_idx, d_ok, g_idx, g_ok)


def _ranges(dc: list[int], gc: list[int], budget: int) -> Iterator[tuple[int, int, int, int]]:
    start, n = 0, len(dc)
    while start < n:
        end, dmax, gmax = start, 0, 0
        while end < n:
            dm, gm = max(dmax, dc[end]), max(gmax, gc[end])
            if end > start and (end - start + 1) * dm * gm > budget:
                break
            dmax, gmax, end = dm, gm, end + 1
        yield start, end, dmax, gmax
        start = end


def _padded(start: np.ndarray, count: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    col = np.arange(width)
    ok = col[None, :] < count[:, None]
    return np.where(ok, start[:, None] + col[None, :], 0), ok


def match_candidates(
    iou: np.ndarray,
    block: Block,
    thresholds: np.ndarray,
    matcher: Callable[[np.ndarray], np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Run `matcher` ((U, C, G) IoUs -> (U, C, T) bool) on the detections that reach some gt
    at the lowest threshold, kept in order; returns their indices and (n, T) results (T columns
    even when nothing matches, so callers can index with them unconditionally)."""
    t_min = float(np.min(thresholds))
    cand = (iou >= t_min).any(axis=2)
    n_cand = cand.sum(axis=1)
    width = int(n_cand.max(initial=0))
    if width == 0:
        return np.zeros(0, dtype=np.int64), np.zeros((0, np.size(thresholds)), dtype=bool)
    perm = np.argsort(~cand, axis=1, kind="stable")[:, :width]
    iou_c = np.take_along_axis(iou, perm[:, :, None], axis=1)
    idx_c = np.take_along_axis(block.det, perm, axis=1)
    ok_c = np.arange(width)[None, :] < n_cand[:, None]
    return idx_c[ok_c], matcher(iou_c)[ok_c]
