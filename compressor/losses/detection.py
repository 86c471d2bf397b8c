"""Anchor-based detection loss pieces: target assignment, CIoU, and the per-level loss sum.

Written for the raw head outputs of an anchor head (per level `[B, A, ny, nx, 5 + nc]` logits)
decoded as in `compressor.models.common.Detect`: xy = 2*sigmoid - 0.5 (cell units), wh =
(2*sigmoid)^2 * anchor. Because a centre may land up to 0.5 cell outside its cell, a target is
also assigned to up to two neighbour cells (the nearer one in x and in y): more positives per
object, which is what makes small-data training converge quickly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class LevelTargets:
    """Positives of one level: which prediction (b, a, gy, gx) must regress to which box."""

    b: torch.Tensor  # image index in batch
    a: torch.Tensor  # anchor index
    gy: torch.Tensor
    gx: torch.Tensor
    box: torch.Tensor  # (P, 4): centre offset inside the cell (may be -0.5..1.5), w, h in cells
    anchor: torch.Tensor  # (P, 2) anchor size in cells
    cls: torch.Tensor  # (P,) class index


def _neighbour_offsets(gxy: torch.Tensor, grid_wh: torch.Tensor) -> list[torch.Tensor]:
    """Masks/offsets for the centre cell plus the nearer x and y neighbour (when inside the grid)."""
    frac = gxy - gxy.floor()
    cell = gxy.floor()
    left = (frac[:, 0] < 0.5) & (cell[:, 0] >= 1)
    right = (frac[:, 0] >= 0.5) & (cell[:, 0] + 1 < grid_wh[0])
    up = (frac[:, 1] < 0.5) & (cell[:, 1] >= 1)
    down = (frac[:, 1] >= 0.5) & (cell[:, 1] + 1 < grid_wh[1])
    ones = torch.ones_like(left)
    return [
        (ones, (0, 0)),
        (left, (-1, 0)),
        (right, (1, 0)),
        (up, (0, -1)),
        (down, (0, 1)),
    ]


def assign_targets(
    targets: torch.Tensor,
    anchors_px: torch.Tensor,
    stride: float,
    grid_hw: tuple[int, int],
    anchor_threshold: float,
) -> LevelTargets:
    """Match targets `(img, cls, cx, cy, w, h)` (input pixels) to anchors of one level.

    An anchor is responsible for a box when neither side ratio exceeds `anchor_threshold`
    (shape match, not IoU: the wh decoding can reach at most 4x the anchor).
    """
    dev = targets.device
    anchors = anchors_px.to(dev, torch.float32) / stride  # (A, 2) cells
    ny, nx = grid_hw
    t = targets.to(torch.float32)
    if t.shape[0] == 0:
        empty = torch.zeros(0, dtype=torch.long, device=dev)
        return LevelTargets(
            empty,
            empty,
            empty,
            empty,
            torch.zeros(0, 4, device=dev),
            torch.zeros(0, 2, device=dev),
            empty,
        )
    gxy = t[:, 2:4] / stride
    gwh = t[:, 4:6] / stride
    ratio = gwh[None] / anchors[:, None]  # (A, M, 2)
    worst = torch.max(ratio, 1.0 / ratio.clamp(min=1e-9)).amax(2)
    a_idx, t_idx = (worst < anchor_threshold).nonzero(as_tuple=True)
    gxy_m, gwh_m = gxy[t_idx], gwh[t_idx]
    grid_wh = torch.tensor([nx, ny], device=dev, dtype=torch.float32)
    parts = []
    for mask, (dx, dy) in _neighbour_offsets(gxy_m, grid_wh):
        cell = gxy_m[mask].floor() + torch.tensor([dx, dy], device=dev, dtype=torch.float32)
        parts.append((a_idx[mask], t_idx[mask], cell, gxy_m[mask], gwh_m[mask]))
    a_all = torch.cat([p[0] for p in parts])
    t_all = torch.cat([p[1] for p in parts])
    cell = torch.cat([p[2] for p in parts])
    cell[:, 0].clamp_(0, nx - 1)
    cell[:, 1].clamp_(0, ny - 1)
    centre = torch.cat([p[3] for p in parts]) - cell
    wh = torch.cat([p[4] for p in parts])
    return LevelTargets(
        b=t[t_all, 0].long(),
        a=a_all,
        gy=cell[:, 1].long(),
        gx=cell[:, 0].long(),
        box=torch.cat([centre, wh], 1),
        anchor=anchors[a_all],
        cls=t[t_all, 1].long(),
    )


def ciou(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Complete IoU of (cx, cy, w, h) boxes, elementwise over rows.

    IoU minus a centre-distance term (normalised by the enclosing box diagonal) minus an
    aspect-ratio term: gives a gradient even when boxes do not overlap.
    """
    p1, p2 = pred[:, :2] - pred[:, 2:] / 2, pred[:, :2] + pred[:, 2:] / 2
    t1, t2 = target[:, :2] - target[:, 2:] / 2, target[:, :2] + target[:, 2:] / 2
    inter = (torch.min(p2, t2) - torch.max(p1, t1)).clamp(min=0).prod(1)
    pw, ph = pred[:, 2], pred[:, 3] + eps
    tw, th = target[:, 2], target[:, 3] + eps
    union = pw * ph + tw * th - inter + eps
    iou = inter / union
    enclose = torch.max(p2, t2) - torch.min(p1, t1)
    diag2 = (enclose**2).sum(1) + eps
    dist2 = ((pred[:, :2] - target[:, :2]) ** 2).sum(1)
    v = (4 / math.pi**2) * (torch.atan(tw / th) - torch.atan(pw / ph)) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (dist2 / diag2 + v * alpha)


def level_losses(
    raw: torch.Tensor, tg: LevelTargets, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Box (1 - CIoU), objectness BCE (IoU as soft target) and class BCE for one level."""
    tobj = torch.zeros(raw.shape[:4], device=raw.device, dtype=raw.dtype)
    zero = raw.sum() * 0.0  # keeps the graph (and DDP) happy when there are no positives
    lbox, lcls = zero, zero
    if tg.b.numel():
        p = raw[tg.b, tg.a, tg.gy, tg.gx]
        pxy = p[:, :2].sigmoid() * 2.0 - 0.5
        pwh = (p[:, 2:4].sigmoid() * 2.0) ** 2 * tg.anchor
        iou = ciou(torch.cat([pxy, pwh], 1), tg.box)
        lbox = (1.0 - iou).mean()
        tobj[tg.b, tg.a, tg.gy, tg.gx] = iou.detach().clamp(min=0).to(tobj.dtype)
        if num_classes > 1:
            onehot = F.one_hot(tg.cls.clamp(0, num_classes - 1), num_classes).to(p.dtype)
            lcls = F.binary_cross_entropy_with_logits(p[:, 5:], onehot)
    lobj = F.binary_cross_entropy_with_logits(raw[..., 4], tobj)
    return lbox, lobj, lcls
