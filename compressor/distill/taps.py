"""Feature taps: named points of a model whose outputs are distilled.

A built-in model declares them in `feature_info` (name, module path, channels, stride); any other
model names module paths directly. Channels, stride and spatial size are measured with one probe
forward, so the teacher/student pair is checked on facts, not on declarations: a pruned student
has fewer channels (adapters bridge that) but must have the same taps at the same strides and
spatial sizes."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from runtime.errors import MtcError


class TapError(MtcError):
    """A tap name that does not exist in the model, or a tap that is not a feature map."""


class TapMismatchError(MtcError):
    """Teacher and student taps do not line up (names, strides or spatial sizes)."""


@dataclass(frozen=True)
class Tap:
    """A resolved tap: name, module path, channels, stride and spatial size at the probe."""

    name: str
    module: str
    channels: int
    stride: int
    hw: tuple[int, int]


def declared_taps(model: nn.Module) -> dict[str, str]:
    """Tap name -> module path from `feature_info` ({} for a model without one)."""
    info = getattr(model, "feature_info", None) or []
    return {f.name: f.module for f in info}


def tap_modules(model: nn.Module, names: Sequence[str]) -> dict[str, str]:
    """Tap name -> module path for the requested names (all declared taps when empty)."""
    declared = declared_taps(model)
    modules = dict(model.named_modules())
    if not names:
        if not declared:
            raise TapError(
                f"{type(model).__name__} declares no feature_info; name the tap modules "
                "explicitly (module paths as in model.named_modules(), e.g. 'backbone.layer3')"
            )
        return dict(declared)
    out = {}
    for name in names:
        if name in declared:
            out[name] = declared[name]
        elif name in modules and name:
            out[name] = name
        else:
            valid = list(declared) or [n for n in modules if n]
            close = difflib.get_close_matches(name, valid, n=3, cutoff=0.4)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            listing = ", ".join(valid[:40]) + (" ..." if len(valid) > 40 else "")
            raise TapError(
                f"tap {name!r} does not exist in {type(model).__name__}{hint} "
                f"(valid taps: {listing})"
            )
    return out


def capture(model: nn.Module, modules: dict[str, str], store: dict[str, torch.Tensor]) -> list:
    """Forward hooks that put each tap module's output into `store[tap name]`."""
    table = dict(model.named_modules())

    def hook_for(name: str):
        def hook(_m: nn.Module, _inp: tuple, out: object) -> None:
            store[name] = out

        return hook

    return [table[path].register_forward_hook(hook_for(n)) for n, path in modules.items()]


def probe_taps(model: nn.Module, names: Sequence[str], example: torch.Tensor) -> list[Tap]:
    """Resolve `names` and measure each tap with one no-grad eval forward on `example`."""
    modules = tap_modules(model, names)
    store: dict[str, torch.Tensor] = {}
    handles = capture(model, modules, store)
    was = model.training
    param = next(model.parameters(), None)
    if param is not None:
        example = example.to(device=param.device, dtype=param.dtype)
    try:
        model.eval()
        with torch.no_grad():
            model(example[:1])
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    taps = []
    for name, path in modules.items():
        out = store.get(name)
        if not isinstance(out, torch.Tensor) or out.dim() != 4:
            got = type(out).__name__ if not isinstance(out, torch.Tensor) else tuple(out.shape)
            raise TapError(
                f"tap {name!r} ({path}) gives {got}, expected a feature map [B, C, H, W]; "
                "choose a module that outputs one tensor"
            )
        h, w = int(out.shape[-2]), int(out.shape[-1])
        stride = max(1, round(example.shape[-2] / h))
        taps.append(Tap(name, path, int(out.shape[1]), stride, (h, w)))
    return taps


def check_alignment(teacher: list[Tap], student: list[Tap]) -> None:
    """Same tap names, strides and spatial sizes; channels may differ (adapters)."""
    t, s = {x.name: x for x in teacher}, {x.name: x for x in student}
    problems = []
    if set(t) != set(s):
        problems.append(
            f"names differ (teacher only: {sorted(set(t) - set(s))}, "
            f"student only: {sorted(set(s) - set(t))})"
        )
    for name in sorted(set(t) & set(s)):
        a, b = t[name], s[name]
        if a.stride != b.stride or a.hw != b.hw:
            problems.append(
                f"{name}: teacher stride {a.stride} {a.hw[0]}x{a.hw[1]}, student "
                f"stride {b.stride} {b.hw[0]}x{b.hw[1]}"
            )
    if problems:
        raise TapMismatchError(
            "teacher and student taps do not line up: "
            + "; ".join(problems)
            + ". Distil a student pruned from this teacher, or choose taps both models share"
        )
