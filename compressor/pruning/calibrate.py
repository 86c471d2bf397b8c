"""Calibration: per-task gradients of the prunable parameters, reduced to per-channel numbers.

For every batch and task t we take one `torch.autograd.grad` of L_t (BN in eval, so the
statistics the model was trained with stay put) and keep, in our own buffers (never `.grad`):
- Taylor terms: for each layer slice, the per-channel sum of w * dL_t/dw for this batch —
  |.| is taken later, per group, after summing the slices of one channel;
- the sum of each task's gradient, so the per-task mean gradient g_t gives per-channel dot
  products g_s . g_t (the gradient-conflict term).
Everything is reduced per layer channel, so the result does not depend on how layers group.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm

from compressor.pruning.errors import CalibrationError
from compressor.pruning.group import channel_sums

LossFn = Callable[[object, object], Mapping[str, torch.Tensor]]
SliceKey = tuple[str, str]


@dataclass
class CalibrationStats:
    """taylor[(module, kind)]: [T, B, dim]; gram[(module, kind)]: [T, T, dim] (or empty)."""

    tasks: tuple[str, ...]
    batches: int
    taylor: dict[SliceKey, torch.Tensor]
    gram: dict[SliceKey, torch.Tensor]
    mean_losses: dict[str, float]


def batch_images(batch: object) -> torch.Tensor:
    """The model input of a calibration batch: a dict's `images`, or the batch itself."""
    if isinstance(batch, Mapping):
        if "images" not in batch:
            raise CalibrationError(
                f"calibration batch is a dict without an 'images' key (keys: {sorted(batch)}); "
                "pass batches as dicts with 'images' (as compressor.data yields) or as tensors"
            )
        batch = batch["images"]
    if not isinstance(batch, torch.Tensor) or batch.dim() < 2:
        raise CalibrationError(
            f"calibration batch is {type(batch).__name__}; expected a tensor [B, C, H, W] or a "
            "dict with an 'images' tensor"
        )
    return batch


def to_device(batch: object, device: torch.device) -> object:
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, Mapping):
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    return batch


def _check_losses(losses: object, tasks: tuple[str, ...] | None) -> tuple[str, ...]:
    if not isinstance(losses, Mapping) or not losses:
        raise CalibrationError(
            f"loss_fn returned {type(losses).__name__}; expected a non-empty dict "
            "{task: scalar tensor} (per-task losses, not their sum)"
        )
    for k, v in losses.items():
        if not isinstance(v, torch.Tensor) or v.numel() != 1:
            raise CalibrationError(
                f"loss_fn()[{k!r}] is {type(v).__name__} {getattr(v, 'shape', '')}; expected a "
                "scalar tensor"
            )
    keys = tuple(losses)
    if tasks is not None and set(keys) != set(tasks):
        raise CalibrationError(f"loss_fn returned tasks {keys} after {tasks} on an earlier batch")
    return tasks or keys


class _Accumulator:
    """Our own gradient buffers, keyed by parameter, plus per-batch Taylor terms."""

    def __init__(self, modules: dict[str, nn.Module], keys: list[SliceKey], conflict: bool):
        self.modules, self.keys, self.conflict = modules, keys, conflict
        self.params = {
            (name, pn): p
            for name, m in modules.items()
            for pn, p in m.named_parameters(recurse=False)
            if pn in ("weight", "bias")
        }
        self.by_module: dict[str, list[str]] = {}
        for mn, pn in self.params:
            self.by_module.setdefault(mn, []).append(pn)
        self.taylor: dict[SliceKey, list[list[torch.Tensor]]] = {}
        self.grad_sum: dict[tuple[str, str], torch.Tensor] = {}

    def add(self, t: int, n_tasks: int, loss: torch.Tensor, retain: bool) -> None:
        plist = list(self.params.values())
        if loss.requires_grad:
            grads = torch.autograd.grad(loss, plist, retain_graph=retain, allow_unused=True)
        else:
            grads = (None,) * len(plist)
        g_by = {
            k: (g if g is not None else torch.zeros_like(p))
            for (k, p), g in zip(self.params.items(), grads)
        }
        for key in self.keys:
            name, kind = key
            prod = {
                pn: self.params[(name, pn)].detach() * g_by[(name, pn)]
                for pn in self.by_module.get(name, [])
            }
            self.taylor.setdefault(key, [[] for _ in range(n_tasks)])[t].append(
                channel_sums(self.modules[name], kind, prod).detach()
            )
        if self.conflict:
            for k, g in g_by.items():
                buf = self.grad_sum.setdefault(k, torch.zeros(n_tasks, *g.shape, dtype=g.dtype))
                buf[t] += g.detach()

    def gram(self, n_tasks: int, n_batches: int) -> dict[SliceKey, torch.Tensor]:
        out: dict[SliceKey, torch.Tensor] = {}
        if not self.conflict:
            return out
        mean = {k: v / n_batches for k, v in self.grad_sum.items()}
        for name, kind in self.keys:
            pns = self.by_module.get(name, [])
            rows = []
            for s, t in itertools.product(range(n_tasks), repeat=2):
                prod = {pn: mean[(name, pn)][s] * mean[(name, pn)][t] for pn in pns}
                rows.append(channel_sums(self.modules[name], kind, prod))
            out[(name, kind)] = torch.stack(rows).view(n_tasks, n_tasks, -1)
        return out


def _calibration_mode(model: nn.Module) -> dict[nn.Module, bool]:
    modes = {m: m.training for m in model.modules()}
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    return modes


def _run_batches(model, loss_fn, batches, acc: _Accumulator):
    """One forward and one autograd.grad per task for each batch; returns (tasks, count, loss
    sums)."""
    device = next(model.parameters()).device
    tasks: tuple[str, ...] | None = None
    loss_sums: dict[str, float] = {}
    n = 0
    for batch in batches:
        batch = to_device(batch, device)
        with torch.enable_grad():
            losses = loss_fn(model(batch_images(batch)), batch)
            tasks = _check_losses(losses, tasks)
            for t, task in enumerate(tasks):
                acc.add(t, len(tasks), losses[task].reshape(()), retain=t < len(tasks) - 1)
        for task in tasks:
            loss_sums[task] = loss_sums.get(task, 0.0) + float(losses[task].detach())
        n += 1
    return tasks, n, loss_sums


def calibrate(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Iterable,
    modules: dict[str, nn.Module],
    keys: list[SliceKey],
    max_batches: int,
    conflict: bool = True,
    progress: bool = True,
) -> CalibrationStats:
    """Run up to `max_batches` batches, one backward per task, and reduce as described above."""
    acc = _Accumulator(modules, sorted(set(keys)), conflict)
    flags = {p: p.requires_grad for p in acc.params.values()}
    modes = _calibration_mode(model)
    try:
        for p in flags:
            p.requires_grad_(True)
        bar = tqdm(
            itertools.islice(batches, max_batches),
            total=max_batches,
            desc="calibrate",
            disable=not progress,
            leave=False,
        )
        tasks, n, loss_sums = _run_batches(model, loss_fn, bar, acc)
    finally:
        for p, f in flags.items():
            p.requires_grad_(f)
        for m, training in modes.items():
            m.training = training
    if n == 0 or tasks is None:
        raise CalibrationError(
            "calibration got no batches; pass a non-empty iterable of batches (a list or a "
            "DataLoader, re-iterable when iterative_steps > 1)"
        )
    taylor = {k: torch.stack([torch.stack(per_b) for per_b in v]) for k, v in acc.taylor.items()}
    return CalibrationStats(
        tasks, n, taylor, acc.gram(len(tasks), n), {t: s / n for t, s in loss_sums.items()}
    )
