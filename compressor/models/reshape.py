"""Make a freshly built network take the (pruned) shapes of a state dict, so a pruned model is
rebuilt from its checkpoint without re-pruning. Generic over the layer types structural pruning
touches; anything else with a shape mismatch is an error that names the key."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from runtime.errors import MtcError


class ShapeMismatchError(MtcError):
    """The state dict does not fit the architecture even after resizing prunable layers."""


def _resize_conv(m: nn.Conv2d | nn.ConvTranspose2d, w: torch.Tensor) -> None:
    depthwise = m.groups > 1 and m.groups == m.in_channels
    if isinstance(m, nn.ConvTranspose2d):
        m.in_channels, m.out_channels = w.shape[0], w.shape[1] * m.groups
    else:
        m.out_channels = w.shape[0]
        m.in_channels = w.shape[1] * (w.shape[0] if depthwise else m.groups)
    if depthwise:
        m.groups = m.out_channels
        m.in_channels = m.out_channels


def _resize_module(m: nn.Module, params: dict[str, torch.Tensor]) -> None:
    if isinstance(m, nn.Conv2d | nn.ConvTranspose2d) and "weight" in params:
        _resize_conv(m, params["weight"])
    elif isinstance(m, nn.modules.batchnorm._BatchNorm) and "weight" in params:
        m.num_features = params["weight"].shape[0]
    elif isinstance(m, nn.BatchNorm2d | nn.LayerNorm | nn.GroupNorm) and "running_mean" in params:
        m.num_features = params["running_mean"].shape[0]
    elif isinstance(m, nn.Linear) and "weight" in params:
        m.out_features, m.in_features = params["weight"].shape
    elif isinstance(m, nn.PReLU) and "weight" in params:
        m.num_parameters = params["weight"].shape[0]
    for name, t in params.items():
        current = getattr(m, name, None)
        if current is None or current.shape == t.shape:
            continue
        if isinstance(current, nn.Parameter):
            setattr(m, name, nn.Parameter(torch.empty_like(t), requires_grad=current.requires_grad))
        else:
            m.register_buffer(name, torch.empty_like(t))


def remove_blocks(model: nn.Module, names: Iterable[str]) -> nn.Module:
    """Replace each named residual block (x + f(x)) by the identity, in place: what depth
    pruning did, redone from the pruning record's `removed_blocks` before the weights load."""
    for name in names:
        parent_name, _, leaf = name.rpartition(".")
        try:
            parent = model.get_submodule(parent_name) if parent_name else model
            parent.get_submodule(leaf)
        except AttributeError:
            raise ShapeMismatchError(
                f"removed block {name!r} of the pruning record is not a module of "
                f"{type(model).__name__}: the record belongs to another architecture"
            ) from None
        setattr(parent, leaf, nn.Identity())
    return model


def resize_to_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """Reshape `model`'s parameters/buffers in place to those of `state_dict`, then load it
    strictly. Keys must match exactly; only shapes may differ."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    if missing or unexpected:
        raise ShapeMismatchError(
            f"state dict does not match the architecture: missing {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
            f"{'...' if len(unexpected) > 5 else ''} ({len(missing)} missing, "
            f"{len(unexpected)} unexpected)"
        )
    by_module: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in state_dict.items():
        if own[key].shape != t.shape:
            mod, _, leaf = key.rpartition(".")
            by_module.setdefault(mod, {})[leaf] = t
    for mod_name, params in by_module.items():
        _resize_module(model.get_submodule(mod_name), params)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        raise ShapeMismatchError(f"state dict does not fit after resizing: {e}") from None
    return model
