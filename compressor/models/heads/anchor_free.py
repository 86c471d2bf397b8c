"""Anchor-free DFL detection head (YOLOv8 / A-YOLOM style) for any multi-task model.

Per level, a box branch predicts four side distributions (left, top, right, bottom; `reg_max`
bins each, side-major) and a class branch predicts class logits; there is no objectness. The
eval-mode output is the raw concatenation `[B, N, 4 * reg_max + nc]` (rows ordered level, y, x),
NOT decoded: the runtime's numpy decoder `anchor_free_dfl` decodes it (spec
`decoded_in_graph=False`), and `decode_torch` here is the same decode in torch for evaluation and
parity tests. Training mode returns the per-level maps `[B, 4 * reg_max + nc, H, W]`, which is
what the loss (compressor.losses.anchor_free) needs to rebuild the anchor points.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from compressor.models.common import Conv
from runtime.errors import MtcError


class AnchorFreeHeadError(MtcError):
    """A head built with, or fed, inputs that do not match its levels."""


class AnchorFreeHead(nn.Module):
    """`forward(features)`: one feature map per stride (finest first).

    in_channels: channels of each level's feature; strides: each level's stride vs the input;
    nc: classes; reg_max: bins per box side (distances 0 .. reg_max - 1 grid cells);
    hidden: width of both branches (default max(16, c0 // 4, 4 * reg_max) for the box branch,
    max(c0, nc) for the class branch, as YOLOv8 sizes them).

    Prediction convs (`box.<i>.2`, `cls.<i>.2`) have layout channels: protect them from pruning
    (`prediction_convs`)."""

    def __init__(
        self,
        in_channels: Sequence[int],
        strides: Sequence[int],
        nc: int,
        reg_max: int = 16,
        hidden: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        if len(in_channels) != len(strides) or not strides:
            raise AnchorFreeHeadError(
                f"one in_channels value per stride: got {list(in_channels)} for strides "
                f"{list(strides)}"
            )
        if nc < 1 or reg_max < 1:
            raise AnchorFreeHeadError(f"nc and reg_max must be >= 1, got {nc}, {reg_max}")
        self.nc, self.reg_max = int(nc), int(reg_max)
        self.strides = tuple(int(s) for s in strides)
        c0 = in_channels[0]
        cb, cc = hidden or (max(16, c0 // 4, 4 * reg_max), max(c0, nc))
        self.box = nn.ModuleList(
            nn.Sequential(Conv(c, cb, 3), Conv(cb, cb, 3), nn.Conv2d(cb, 4 * reg_max, 1))
            for c in in_channels
        )
        self.cls = nn.ModuleList(
            nn.Sequential(Conv(c, cc, 3), Conv(cc, cc, 3), nn.Conv2d(cc, nc, 1))
            for c in in_channels
        )
        self._init_bias()

    def _init_bias(self) -> None:
        """Box logits flat (every distance starts near the middle); class logits start at a
        prior of ~5 objects per 640x640 image per level, so early BCE is not dominated by the
        many negatives."""
        for box, cls, s in zip(self.box, self.cls, self.strides):
            nn.init.constant_(box[-1].bias, 1.0)
            nn.init.constant_(cls[-1].bias, math.log(5 / self.nc / (640 / s) ** 2))

    def prediction_convs(self, prefix: str = "") -> tuple[str, ...]:
        """Module names of the prediction convs (for a spec's `protected`), under `prefix`."""
        p = f"{prefix}." if prefix else ""
        n = len(self.strides)
        return tuple(f"{p}{b}.{i}.2" for b in ("box", "cls") for i in range(n))

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor] | torch.Tensor:
        if len(features) != len(self.strides):
            raise AnchorFreeHeadError(
                f"head has {len(self.strides)} levels (strides {list(self.strides)}), got "
                f"{len(features)} feature maps"
            )
        maps = [torch.cat((b(x), c(x)), 1) for x, b, c in zip(features, self.box, self.cls)]
        return maps if self.training else flatten_levels(maps)


def flatten_levels(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-level maps [B, C, H, W] -> rows [B, N, C] ordered level, y, x."""
    return torch.cat([m.flatten(2) for m in maps], 2).permute(0, 2, 1).contiguous()


def anchor_points_torch(
    input_hw: Sequence[int],
    strides: Sequence[int],
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell centres in grid units [N, 2] (x, y) and each row's stride [N, 1] (level, y, x):
    the numpy decoder's `anchor_points` in torch."""
    h, w = (int(v) for v in input_hw)
    grids = [(h // int(s), w // int(s)) for s in strides]
    return level_points(grids, strides, device, dtype)


def level_points(
    grids: Sequence[tuple[int, int]],
    strides: Sequence[int],
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`anchor_points_torch` from each level's grid size (ny, nx), e.g. the level maps' shapes."""
    points, row_strides = [], []
    for (ny, nx), s in zip(grids, strides):
        ys = torch.arange(ny, device=device, dtype=dtype) + 0.5
        xs = torch.arange(nx, device=device, dtype=dtype) + 0.5
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack((gx, gy), -1).reshape(-1, 2))
        row_strides.append(torch.full((ny * nx, 1), float(s), device=device, dtype=dtype))
    return torch.cat(points, 0), torch.cat(row_strides, 0)


def side_distances(box_logits: torch.Tensor, reg_max: int) -> torch.Tensor:
    """[..., 4 * reg_max] side-major bin logits -> [..., 4] expected distances (grid units)."""
    bins = torch.arange(reg_max, device=box_logits.device, dtype=box_logits.dtype)
    p = box_logits.unflatten(-1, (4, reg_max)).softmax(-1)
    return (p * bins).sum(-1)


def decode_torch(
    raw: torch.Tensor | Sequence[torch.Tensor],
    input_hw: Sequence[int],
    strides: Sequence[int],
    reg_max: int,
) -> torch.Tensor:
    """Raw head output (rows [B, N, 4 * reg_max + nc], or the training-mode level maps) ->
    rows [B, N, 5 + nc] = (cx, cy, w, h in input pixels, obj = 1, class sigmoids): the same
    rows as the runtime's numpy `anchor_free_dfl` decoder."""
    rows = raw if isinstance(raw, torch.Tensor) else flatten_levels(raw)
    points, row_strides = anchor_points_torch(input_hw, strides, rows.device, rows.dtype)
    nbox = 4 * reg_max
    if rows.ndim != 3 or rows.shape[1] != points.shape[0] or rows.shape[2] <= nbox:
        raise AnchorFreeHeadError(
            f"raw detection output {list(rows.shape)}; expected [B, {points.shape[0]}, "
            f"{nbox} + classes] for input {tuple(input_hw)} and strides {list(strides)}"
        )
    dist = side_distances(rows[..., :nbox], reg_max)
    x1y1, x2y2 = points - dist[..., :2], points + dist[..., 2:]
    xy = (x1y1 + x2y2) * 0.5 * row_strides
    wh = (x2y2 - x1y1) * row_strides
    obj = torch.ones_like(rows[..., :1])
    return torch.cat((xy, wh, obj, rows[..., nbox:].sigmoid()), -1)
