"""A channel group in our own terms: the coupled channels of one DepGraph group, described as
slices of concrete layers (which indices of which module's output, input or affine vector belong
to which channel of the group). Importances work on these slices only, so they never touch
Torch-Pruning objects and can be unit-tested on a hand-made group."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

OUT, IN, ELEM = "out", "in", "elem"

NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.PReLU)
PARAM_LAYER_TYPES = (nn.modules.conv._ConvNd, nn.Linear, *NORM_TYPES)


@dataclass
class LayerSlice:
    """Indices `local` of module `module` along `kind` belong to group channels `root`."""

    module: str
    kind: str
    local: torch.Tensor
    root: torch.Tensor


@dataclass
class ChannelGroup:
    """The unit of pruning: `size` coupled channels, removed together from every slice."""

    index: int
    root: str
    size: int
    slices: list[LayerSlice]
    handle: Any = field(default=None, repr=False, compare=False)

    def gather(self, per_slice: Callable[[LayerSlice], torch.Tensor | None]) -> torch.Tensor:
        """Sum a per-slice quantity (last dim indexed like the module's dim) into the group's
        channels. `per_slice` returns a tensor [..., dim] or None to skip the slice."""
        total: torch.Tensor | None = None
        for s in self.slices:
            v = per_slice(s)
            if v is None:
                continue
            v = v[..., s.local]
            if total is None:
                total = torch.zeros(*v.shape[:-1], self.size, dtype=v.dtype)
            total.index_add_(-1, s.root, v)
        return total if total is not None else torch.zeros(self.size)


def is_depthwise(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.conv._ConvNd) and m.groups > 1 and m.groups == m.in_channels


def slice_kind(m: nn.Module, is_out: bool) -> str | None:
    """Which dim of `m` a Torch-Pruning handler touches, or None when it owns no parameters we
    score (e.g. a single-parameter PReLU, the input side of a depthwise conv)."""
    if isinstance(m, NORM_TYPES):
        if isinstance(m, nn.PReLU) and m.num_parameters == 1:
            return None
        if isinstance(m, nn.LayerNorm) and len(m.normalized_shape) != 1:
            return None
        return ELEM if getattr(m, "weight", None) is not None else None
    if isinstance(m, nn.modules.conv._ConvNd | nn.Linear):
        if not is_out and is_depthwise(m):
            return None  # its weights are the output slice already
        return OUT if is_out else IN
    return None


def _conv_sums(m: nn.modules.conv._ConvNd, kind: str, w: torch.Tensor) -> torch.Tensor:
    """Per-channel sums of a conv-weight-shaped tensor along the output or input channels."""
    g = m.groups
    if m.transposed:  # weight [in, out/g, *k]
        if kind == IN:
            return w.flatten(1).sum(1)
        return w.reshape(g, w.shape[0] // g, w.shape[1], -1).sum((1, 3)).reshape(-1)
    if kind == OUT:  # weight [out, in/g, *k]
        return w.flatten(1).sum(1)
    return w.reshape(g, w.shape[0] // g, w.shape[1], -1).sum((1, 3)).reshape(-1)


def channel_sums(m: nn.Module, kind: str, tensors: Mapping[str, torch.Tensor | None]):
    """Sum `tensors` (shaped like m's `weight` / `bias`) over each channel's slice along `kind`:
    the building block of Taylor terms (w * g), L1 (|w|) and gradient dot products (g_s * g_t)."""
    w, b = tensors.get("weight"), tensors.get("bias")
    if w is None:
        return None
    if kind == ELEM:
        out = w.reshape(-1).clone()
        return out + b.reshape(-1) if b is not None else out
    if isinstance(m, nn.Linear):
        out = w.sum(1) if kind == OUT else w.sum(0)
    else:
        out = _conv_sums(m, kind, w)
    if b is not None and kind == OUT:
        out = out + b
    return out
