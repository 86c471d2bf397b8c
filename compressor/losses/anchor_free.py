"""A small detection loss for the anchor-free DFL head (compressor.models.heads.anchor_free).

Assignment is centre sampling (FCOS-style), not YOLOv8's task-aligned assigner: an anchor point
is a positive of a ground-truth box when it lies inside the box, within `radius` cells of the
box centre, and the box's sides are within the level's range (every side distance <= reg_max - 1
cells, so the distribution can represent it). A point claimed by several boxes goes to the
smallest. The point of the cell holding a box's centre on the finest level is always a positive
of that box, so no box is left without one (even boxes smaller than a cell).

Losses: class BCE on every point (one-hot targets at positives, normalised by the positive
count, as YOLOv8 does), and for positives 1 - CIoU on the decoded box plus DFL: cross-entropy on
the two bins around each target distance, weighted by closeness (Generalized Focal Loss).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from compressor.losses.detection import ciou
from compressor.losses.errors import LossConfigError, LossInputError, check_non_negative
from compressor.models.heads.anchor_free import flatten_levels, level_points, side_distances


@dataclass(frozen=True)
class AnchorFreeLossConfig:
    """Gains follow YOLOv8 (box 7.5, cls 0.5, dfl 1.5); radius in cells of each level."""

    box_gain: float = 7.5
    cls_gain: float = 0.5
    dfl_gain: float = 1.5
    radius: float = 2.5

    def __post_init__(self) -> None:
        check_non_negative(self, "anchor-free loss option")
        if self.radius <= 0.5:
            raise LossConfigError(
                f"radius={self.radius} cells must be > 0.5 (the centre cell's own reach)"
            )


@dataclass
class Assignment:
    """Positives: which row (b, n) regresses to which box (xyxy, grid units of its level)."""

    b: torch.Tensor
    n: torch.Tensor
    box: torch.Tensor  # (P, 4) x1, y1, x2, y2 in grid units of the row's level
    cls: torch.Tensor


def assign(
    targets: torch.Tensor,
    points: torch.Tensor,
    row_strides: torch.Tensor,
    finest_grid: tuple[int, int],
    reg_max: int,
    radius: float,
    batch: int,
) -> Assignment:
    """targets (img, cls, cx, cy, w, h) in input pixels; points [N, 2] grid units and
    row_strides [N, 1] (rows ordered level, y, x; the first ny * nx rows are the finest level,
    of grid `finest_grid` = (ny, nx)). Returns the positives (rule: the module docstring)."""
    dev = points.device
    t = targets.to(dev, torch.float32)
    m = t.shape[0]
    if m == 0:
        e = torch.zeros(0, dtype=torch.long, device=dev)
        return Assignment(e, e, torch.zeros(0, 4, device=dev), e)
    s = row_strides[:, 0]  # (N,)
    xyxy = torch.cat((t[:, 2:4] - t[:, 4:6] / 2, t[:, 2:4] + t[:, 4:6] / 2), 1)  # pixels
    pix = points * row_strides  # (N, 2) pixels
    sides = torch.cat((pix[None] - xyxy[:, None, :2], xyxy[:, None, 2:] - pix[None]), -1)
    sides = sides / s[None, :, None]  # (M, N, 4) grid units
    near = ((pix[None] - t[:, None, 2:4]).abs() < radius * s[None, :, None]).all(-1)
    pos = near & (sides.amin(-1) > 0) & (sides.amax(-1) <= reg_max - 1)
    ny0, nx0 = finest_grid
    cell = (t[:, 2:4] / s[0]).floor().long()
    centre_row = cell[:, 1].clamp(0, ny0 - 1) * nx0 + cell[:, 0].clamp(0, nx0 - 1)
    pos[torch.arange(m, device=dev), centre_row] = True
    cost = torch.where(pos, (t[:, 4] * t[:, 5])[:, None], torch.inf)  # smallest box wins
    img = t[:, 0].long()
    owner = torch.full((batch, points.shape[0]), -1, dtype=torch.long, device=dev)
    for i in img.unique().tolist():
        idx = (img == i).nonzero()[:, 0]
        val, arg = cost[idx].min(0)
        owner[i] = torch.where(torch.isfinite(val), idx[arg], -1)
    b, n = (owner >= 0).nonzero(as_tuple=True)
    j = owner[b, n]
    return Assignment(b, n, xyxy[j] / s[n, None], t[j, 1].long())


def _cxcywh(q: torch.Tensor) -> torch.Tensor:
    return torch.cat(((q[:, :2] + q[:, 2:]) / 2, q[:, 2:] - q[:, :2]), 1)


def dfl_loss(box_logits: torch.Tensor, target: torch.Tensor, reg_max: int) -> torch.Tensor:
    """box_logits (P, 4 * reg_max), target (P, 4) distances in grid units -> mean DFL."""
    tgt = target.clamp(0, reg_max - 1 - 0.01)
    left = tgt.floor().long()
    w_right = tgt - left
    logits = box_logits.reshape(-1, reg_max)
    ce_l = F.cross_entropy(logits, left.reshape(-1), reduction="none")
    ce_r = F.cross_entropy(logits, (left + 1).reshape(-1), reduction="none")
    return (ce_l * (1 - w_right.reshape(-1)) + ce_r * w_right.reshape(-1)).mean()


class AnchorFreeLoss:
    """`loss(level_maps, targets) -> scalar` (gains applied) for training-mode head outputs.
    `components` holds the last call's unweighted box / cls / dfl terms for logging."""

    def __init__(
        self,
        strides: Sequence[int],
        nc: int,
        reg_max: int = 16,
        cfg: AnchorFreeLossConfig = AnchorFreeLossConfig(),
    ) -> None:
        self.strides = tuple(int(s) for s in strides)
        self.nc, self.reg_max, self.cfg = int(nc), int(reg_max), cfg
        self._parts: dict[str, torch.Tensor] = {}

    @property
    def components(self) -> dict[str, float]:
        return {k: float(v) for k, v in self._parts.items()}

    def __call__(self, maps: Sequence[torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        if not isinstance(maps, list | tuple) or len(maps) != len(self.strides):
            raise LossInputError(
                f"det output must be a list of {len(self.strides)} level maps (training mode); "
                f"got {type(maps).__name__}. Call model.train() (or freeze_bn) first"
            )
        nbox = 4 * self.reg_max
        if any(m.shape[1] != nbox + self.nc for m in maps):
            raise LossInputError(
                f"level maps have {[m.shape[1] for m in maps]} channels; expected "
                f"{nbox} + {self.nc} (4 x reg_max box bins + classes)"
            )
        if targets.numel() and (targets[:, 1].min() < 0 or targets[:, 1].max() >= self.nc):
            raise LossInputError(
                f"target classes {sorted(set(targets[:, 1].long().tolist()))} outside 0..{self.nc - 1}"
            )
        rows = flatten_levels(maps).float()
        grids = [(int(m.shape[2]), int(m.shape[3])) for m in maps]
        points, row_strides = level_points(grids, self.strides, rows.device)
        a = assign(
            targets, points, row_strides, grids[0], self.reg_max, self.cfg.radius, rows.shape[0]
        )
        npos = max(int(a.b.numel()), 1)
        cls_t = torch.zeros_like(rows[..., nbox:])
        cls_t[a.b, a.n, a.cls] = 1.0
        lcls = F.binary_cross_entropy_with_logits(rows[..., nbox:], cls_t, reduction="sum") / npos
        lbox = ldfl = rows.sum() * 0.0  # keeps the graph when there are no positives
        if a.b.numel():
            box_logits = rows[a.b, a.n, :nbox]
            dist = side_distances(box_logits, self.reg_max)
            p = points[a.n]
            pred = torch.cat((p - dist[:, :2], p + dist[:, 2:]), 1)
            lbox = (1.0 - ciou(_cxcywh(pred), _cxcywh(a.box))).mean()
            target = torch.cat((p - a.box[:, :2], a.box[:, 2:] - p), 1)
            ldfl = dfl_loss(box_logits, target, self.reg_max)
        self._parts = {"det_box": lbox.detach(), "det_cls": lcls.detach(), "det_dfl": ldfl.detach()}
        c = self.cfg
        return c.box_gain * lbox + c.cls_gain * lcls + c.dfl_gain * ldfl
