"""Exact parameter and MAC counts of a pruning plan, without pruning anything.

Conv / Linear parameters and MACs are bilinear in (output width, input width) and norm-layer
parameters are linear in their width, so once we know how many indices each layer slice loses,
the pruned model's totals follow in microseconds. That lets the planner search the threshold
that hits the requested reduction exactly (Torch-Pruning's ratio is per channel, not per
parameter), and a test checks the prediction against the really pruned model."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from compressor.flops import LayerCost, count_params
from compressor.pruning.group import IN, ChannelGroup, is_depthwise


@dataclass
class _Layer:
    module: nn.Module
    out0: int
    in0: int
    params0: int
    macs0: int

    def params(self, out: int, inn: int) -> int:
        m = self.module
        bias = m.bias.numel() * out // self.out0 if getattr(m, "bias", None) is not None else 0
        if isinstance(m, nn.modules.conv._ConvNd):
            k = m.weight[0, 0].numel()
            if is_depthwise(m):
                return out * k + bias
            return out * inn * k // m.groups + bias
        if isinstance(m, nn.Linear):
            return out * inn + bias
        return self.params0 * out // self.out0  # norm / PReLU: linear in width

    def macs(self, out: int, inn: int) -> int:
        if self.macs0 == 0:
            return 0
        frac_in = 1.0 if is_depthwise(self.module) else inn / self.in0
        return round(self.macs0 * (out / self.out0) * frac_in)


def _widths(m: nn.Module) -> tuple[int, int]:
    if isinstance(m, nn.modules.conv._ConvNd):
        return m.out_channels, m.in_channels
    if isinstance(m, nn.Linear):
        return m.out_features, m.in_features
    w = m.weight
    return w.numel(), w.numel()


class CostModel:
    """Params / MACs of the model after removing, for each group, the channels in a mask."""

    def __init__(
        self,
        model: nn.Module,
        groups: list[ChannelGroup],
        layer_costs: dict[str, LayerCost],
    ):
        modules = dict(model.named_modules())
        names = sorted({s.module for g in groups for s in g.slices})
        self.layers = {}
        for n in names:
            m = modules[n]
            out0, in0 = _widths(m)
            p0 = sum(p.numel() for p in m.parameters(recurse=False))
            macs0 = layer_costs[n].macs if n in layer_costs else 0
            self.layers[n] = _Layer(m, out0, in0, p0, macs0)
        self.groups = groups
        self.params0 = count_params(model)
        self.macs0 = sum(c.macs for c in layer_costs.values())
        self._fixed_params = self.params0 - sum(ly.params0 for ly in self.layers.values())
        self._fixed_macs = self.macs0 - sum(ly.macs0 for ly in self.layers.values())

    def widths(self, masks: dict[int, torch.Tensor]) -> dict[str, tuple[int, int]]:
        """(out, in) width of every modelled layer after removing masked channels."""
        lost = {n: [0, 0] for n in self.layers}
        for g in self.groups:
            mask = masks.get(g.index)
            if mask is None or not bool(mask.any()):
                continue
            for s in g.slices:
                lost[s.module][1 if s.kind == IN else 0] += int(mask[s.root].sum())
        out = {}
        for n, ly in self.layers.items():
            o = ly.out0 - lost[n][0]
            i = o if is_depthwise(ly.module) else ly.in0 - lost[n][1]
            out[n] = (o, i)
        return out

    def evaluate(self, masks: dict[int, torch.Tensor]) -> tuple[int, int]:
        """(params, MACs per image) after pruning the masked channels."""
        w = self.widths(masks)
        params = self._fixed_params + sum(ly.params(*w[n]) for n, ly in self.layers.items())
        macs = self._fixed_macs + sum(ly.macs(*w[n]) for n, ly in self.layers.items())
        return params, macs
