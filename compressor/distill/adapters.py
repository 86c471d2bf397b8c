"""1x1 adapters from student to teacher channels, one per tap. They are trained with the student
and live in the distillation extension, never in the student, so nothing of them is exported."""

from __future__ import annotations

import torch
from torch import nn

from compressor.distill.taps import Tap


def adapter_key(tap_name: str) -> str:
    """ModuleDict keys cannot contain dots (module paths used as tap names do)."""
    return tap_name.replace(".", "__")


class Adapter(nn.Module):
    """Conv1x1 (+BN): maps a student feature map onto the teacher's channel count."""

    def __init__(self, c_student: int, c_teacher: int, bn: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(c_student, c_teacher, 1, bias=not bn)
        self.bn = nn.BatchNorm2d(c_teacher) if bn else nn.Identity()
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="linear")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


def build_adapters(student: list[Tap], teacher: list[Tap], bn: bool = True) -> nn.ModuleDict:
    t = {x.name: x for x in teacher}
    return nn.ModuleDict(
        {adapter_key(s.name): Adapter(s.channels, t[s.name].channels, bn) for s in student}
    )


def _rows(x: torch.Tensor, max_rows: int, gen: torch.Generator) -> torch.Tensor:
    """[B, C, H, W] -> [N, C] pixel rows, subsampled to at most max_rows."""
    rows = x.detach().float().permute(0, 2, 3, 1).reshape(-1, x.shape[1])
    if rows.shape[0] > max_rows:
        rows = rows[torch.randperm(rows.shape[0], generator=gen)[:max_rows].to(rows.device)]
    return rows


@torch.no_grad()
def fit_adapter(adapter: Adapter, s: torch.Tensor, t: torch.Tensor, max_rows: int = 16384) -> None:
    """Initialise an adapter as the ridge least-squares map from student to teacher features of
    one batch. Why: a random 1x1 map makes the first KD gradients large and meaningless, and on
    a short fine-tune they undo what pruning kept; the fitted map starts KD at the student's
    real deviation from the teacher."""
    gen = torch.Generator().manual_seed(0)
    xs, xt = _rows(s, max_rows, gen), _rows(t, max_rows, gen)
    ms, mt = xs.mean(0), xt.mean(0)
    xs, xt = xs - ms, xt - mt
    gram = xs.T @ xs
    ridge = 1e-3 * gram.diagonal().mean().clamp_min(1e-12)
    eye = torch.eye(gram.shape[0], device=gram.device)
    w = torch.linalg.solve(gram + ridge * eye, xs.T @ xt)  # [Cs, Ct]
    conv = adapter.conv
    conv.weight.copy_(w.T.reshape_as(conv.weight).to(conv.weight.dtype))
    if isinstance(adapter.bn, nn.BatchNorm2d):
        y = xs @ w  # centred conv output
        adapter.bn.running_mean.copy_(ms @ w)
        adapter.bn.running_var.copy_(y.var(0).clamp_min(1e-6))
        adapter.bn.weight.copy_(xt.std(0).clamp_min(1e-6))
        adapter.bn.bias.copy_(mt)
    elif conv.bias is not None:
        conv.bias.copy_(mt - ms @ w)
