"""Parameter and FLOPs counting for any model, by forward hooks.

Why our own: pruning targets and reports must agree on one definition. We count the multiply-
accumulates of Conv / ConvTranspose / Linear layers (everything else — BN, activations, adds,
pooling, attention matmuls — is a small, width-proportional remainder that pruning changes the
same way) and report FLOPs = 2 x MACs, the convention of the YOLO literature. FLOPs are measured
at 640x384 (W x H) by default, the YOLOP protocol input.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from runtime.errors import MtcError
from runtime.spec import DEFAULT_INPUT_HW


class FlopsInputError(MtcError):
    """The probe input for FLOPs counting could not be built or run."""


@dataclass(frozen=True)
class LayerCost:
    """MACs of one layer for one image; `spatial` is the per-channel element count the channel
    product was multiplied by (output side for Conv/Linear, input side for ConvTranspose)."""

    name: str
    kind: str
    macs: int
    spatial: int


@dataclass(frozen=True)
class ModelCost:
    """Parameters and compute of a model at one input size (per image)."""

    params: int
    macs: int
    input_hw: tuple[int, int]
    layers: dict[str, LayerCost] = field(default_factory=dict)

    @property
    def flops(self) -> int:
        return 2 * self.macs

    def to_dict(self) -> dict:
        return {
            "params": self.params,
            "macs": self.macs,
            "flops": self.flops,
            "gflops": round(self.flops / 1e9, 4),
            "input_hw": list(self.input_hw),
        }


def count_params(model: nn.Module) -> int:
    """Unique parameters (shared tensors once)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def _spatial(t: torch.Tensor) -> int:
    """Elements per output channel per image (1 for a Linear on [B, C])."""
    return int(t[0, 0].numel()) if t.dim() > 2 else (int(t.shape[1]) if t.dim() == 3 else 1)


def layer_macs(module: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> tuple[int, int]:
    """(MACs per image, output spatial size) of one Conv/ConvTranspose/Linear call."""
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        k = int(torch.tensor(module.kernel_size).prod())
        # Counted from the input side, which is exact: every input pixel of every input channel
        # is multiplied into k positions of each of the (out / groups) channels it feeds.
        in_sp = _spatial(inp)
        return in_sp * module.in_channels * (module.out_channels // module.groups) * k, in_sp
    if isinstance(module, nn.modules.conv._ConvNd):
        k = int(torch.tensor(module.kernel_size).prod())
        out_sp = _spatial(out)
        return out_sp * module.out_channels * (module.in_channels // module.groups) * k, out_sp
    if isinstance(module, nn.Linear):
        rows = int(out[0].numel() // module.out_features) if out.dim() > 1 else 1
        return rows * module.in_features * module.out_features, rows
    return 0, 0


def _probe_input(model: nn.Module, input_hw: tuple[int, int], channels: int) -> torch.Tensor:
    try:
        ref = next(model.parameters())
    except StopIteration:
        ref = torch.zeros(())
    return torch.zeros(1, channels, *input_hw, dtype=ref.dtype, device=ref.device)


def count_cost(
    model: nn.Module,
    input_hw: tuple[int, int] = DEFAULT_INPUT_HW,
    example: torch.Tensor | None = None,
    in_channels: int = 3,
) -> ModelCost:
    """Params and per-image MACs of `model` at `input_hw` (H, W). The model runs once in eval
    mode without gradients; its training mode is restored afterwards."""
    x = example[:1] if example is not None else _probe_input(model, input_hw, in_channels)
    layers: dict[str, LayerCost] = {}
    names = {m: n for n, m in model.named_modules()}

    def hook(m: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        if not isinstance(out, torch.Tensor) or not inp or not isinstance(inp[0], torch.Tensor):
            return
        macs, sp = layer_macs(m, inp[0], out)
        prev = layers.get(names[m])
        total = macs + (prev.macs if prev else 0)
        layers[names[m]] = LayerCost(names[m], type(m).__name__, total, sp)

    kinds = (nn.modules.conv._ConvNd, nn.Linear)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, kinds)]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    except RuntimeError as e:
        raise FlopsInputError(
            f"model does not run on a {tuple(x.shape)} probe input ({str(e).splitlines()[0]}); "
            "pass input_hw the model accepts (e.g. a multiple of its largest stride)"
        ) from None
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    hw = (int(x.shape[-2]), int(x.shape[-1]))
    return ModelCost(count_params(model), sum(c.macs for c in layers.values()), hw, layers)
