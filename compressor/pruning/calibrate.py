"""Calibration: per-task gradients of the prunable parameters, reduced to per-channel numbers.

For every batch and task t we take one `torch.autograd.grad` of L_t (BN in eval, so the
statistics the model was trained with stay put) and keep, in our own buffers (never `.grad`):
- Taylor terms: for each layer slice, the per-channel sum of w * dL_t/dw for this batch —
  |.| is taken later, per group, after summing the slices of one channel;
- the sum of each task's gradient, so the per-task mean gradient g_t gives per-channel dot
  products g_s . g_t (the gradient-conflict term).
Everything is reduced per layer channel, so the result does not depend on how layers group.
With removable blocks (depth pruning) the same pass also keeps, per block, task and batch,
dL_t/dy . (y - x) for the block's output y = x + f(x): the first-order change of L_t when the
branch f is removed (Taylor on the branch output), and the dot products of the per-task mean
gradients of the block's parameters (its conflict term).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm import tqdm

from compressor.pruning.errors import CalibrationError
from compressor.pruning.group import channel_sums

LossFn = Callable[[object, object], Mapping[str, torch.Tensor]]
SliceKey = tuple[str, str]


@dataclass
class CalibrationStats:
    """taylor[(module, kind)]: [T, B, dim]; gram[(module, kind)]: [T, T, dim] (or empty);
    block_taylor[block]: [T, B]; block_gram[block]: [T, T] (or empty)."""

    tasks: tuple[str, ...]
    batches: int
    taylor: dict[SliceKey, torch.Tensor]
    gram: dict[SliceKey, torch.Tensor]
    mean_losses: dict[str, float]
    block_taylor: dict[str, torch.Tensor] = field(default_factory=dict)
    block_gram: dict[str, torch.Tensor] = field(default_factory=dict)


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


class _BlockTaps:
    """Forward hooks on the removable blocks: each call's output y (in the graph) and its
    residual branch y - x (detached)."""

    def __init__(self, blocks: Mapping[str, nn.Module]):
        self.blocks = dict(blocks)
        self.calls: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {n: [] for n in blocks}
        self.handles: list = []

    def __enter__(self) -> _BlockTaps:
        for name, m in self.blocks.items():
            self.handles.append(m.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def _hook(self, name: str):
        def hook(_m: nn.Module, inp: tuple, out: object) -> None:
            x = inp[0] if inp else None
            if not (isinstance(x, torch.Tensor) and isinstance(out, torch.Tensor)) or (
                x.shape != out.shape
            ):
                got = [list(getattr(v, "shape", [])) for v in (x, out)]
                raise CalibrationError(
                    f"removable block {name!r} maps {got[0]} to {got[1]}: not a residual block "
                    "x + f(x) that removal leaves as the identity; take it out of the model "
                    "spec's removable_blocks"
                )
            self.calls[name].append((out, (out - x).detach()))

        return hook

    def reset(self) -> None:
        for calls in self.calls.values():
            calls.clear()


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
        self.block_taylor: dict[str, list[list[torch.Tensor]]] = {}
        self.taps: _BlockTaps | None = None

    def _grads(self, loss: torch.Tensor, retain: bool, outs: list[torch.Tensor]):
        plist = list(self.params.values())
        live = [y for y in outs if y.requires_grad]
        if not loss.requires_grad:
            return (None,) * len(plist), [None] * len(outs)
        grads = torch.autograd.grad(loss, plist + live, retain_graph=retain, allow_unused=True)
        it = iter(grads[len(plist) :])
        return grads[: len(plist)], [next(it) if y.requires_grad else None for y in outs]

    def _add_blocks(self, t: int, n_tasks: int, loss: torch.Tensor, retain: bool):
        """Parameter gradients; and per block, sum over its calls of dL/dy . (y - x)."""
        taps = self.taps.calls if self.taps is not None else {}
        calls = [(name, y, branch) for name, c in taps.items() for y, branch in c]
        grads, out_grads = self._grads(loss, retain, [y for _, y, _ in calls])
        per_block = {name: torch.zeros((), dtype=torch.float64) for name in taps}
        for (name, _, branch), g in zip(calls, out_grads):
            if g is not None:
                per_block[name] = per_block[name] + (g.detach() * branch).sum().double()
        for name, v in per_block.items():
            self.block_taylor.setdefault(name, [[] for _ in range(n_tasks)])[t].append(v)
        return grads

    def add(self, t: int, n_tasks: int, loss: torch.Tensor, retain: bool) -> None:
        grads = self._add_blocks(t, n_tasks, loss, retain)
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

    def block_gram(self, n_tasks: int, n_batches: int) -> dict[str, torch.Tensor]:
        """Per block: g_s . g_t of the per-task mean gradients of all its parameters."""
        if not self.conflict or self.taps is None:
            return {}
        out = {}
        for block in self.taps.blocks:
            keys = [k for k in self.grad_sum if k[0] == block or k[0].startswith(block + ".")]
            g = torch.zeros(n_tasks, n_tasks, dtype=torch.float64)
            for k in keys:
                mean = self.grad_sum[k].double().flatten(1) / n_batches  # [T, numel]
                g += mean @ mean.T
            out[block] = g
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
        if acc.taps is not None:
            acc.taps.reset()
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
    blocks: Mapping[str, nn.Module] | None = None,
) -> CalibrationStats:
    """Run up to `max_batches` batches, one backward per task, and reduce as described above.
    `blocks`: removable residual blocks by module path (depth pruning), or None."""
    blocks = dict(blocks or {})
    if blocks and conflict:  # the conflict term of a block reads all of its parameters
        modules = {**modules}
        for bname, bm in blocks.items():
            modules.update(dict(bm.named_modules(prefix=bname)))
    acc = _Accumulator(modules, sorted(set(keys)), conflict)
    taps = _BlockTaps(blocks) if blocks else None
    acc.taps = taps
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
        if taps is None:
            tasks, n, loss_sums = _run_batches(model, loss_fn, bar, acc)
        else:
            with taps:
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
    block_taylor = {
        k: torch.stack([torch.stack(per_b) for per_b in v]) for k, v in acc.block_taylor.items()
    }
    return CalibrationStats(
        tasks,
        n,
        taylor,
        acc.gram(len(tasks), n),
        {t: s / n for t, s in loss_sums.items()},
        block_taylor,
        acc.block_gram(len(tasks), n),
    )
