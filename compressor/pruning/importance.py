"""Channel importances. An importance is one callable: ChannelGroup -> GroupScores (higher =
keep, plus the channels the safe rule forbids pruning). A strict registry maps the config names
(random, l1, taylor_sum, tci, tci_gcp, and whatever a user registers) to factories, so a new
criterion is a new function; PruneConfig and the CLI read the same registry.

Every score is normalised within its group, which is what makes one global ranking across
groups meaningful."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from compressor.pruning.calibrate import CalibrationStats
from compressor.pruning.config import PruneConfig
from compressor.pruning.errors import PruneConfigError
from compressor.pruning.group import ELEM, ChannelGroup, channel_sums
from runtime.registry import Registry


def _safe_div(x: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """x / d, 0 where d == 0. No epsilon: gradient-based numbers can be far below any fixed
    epsilon (1e-12 and smaller), and clamping would silently rescale them."""
    d = d.expand_as(x) if d.dim() else d.expand(x.shape)
    return torch.where(d > 0, x / torch.where(d > 0, d, torch.ones_like(d)), torch.zeros_like(x))


@dataclass
class GroupScores:
    """score: [n] (higher = more important); safe: [n] bool, never pruned. per_task / conflict
    are kept for inspection and tests (None for importances without them)."""

    score: torch.Tensor
    safe: torch.Tensor
    per_task: torch.Tensor | None = None
    conflict: torch.Tensor | None = None


Importance = Callable[[ChannelGroup], GroupScores]


@dataclass
class ImportanceContext:
    cfg: PruneConfig
    modules: dict[str, nn.Module]
    stats: CalibrationStats | None


@dataclass(frozen=True)
class ImportanceEntry:
    """A registered importance: its factory and what pruning must prepare for it.
    needs_gradients: per-task calibration runs first (ctx.stats is set; prune needs a loss_fn).
    conflict: calibration also collects the per-task gradient dot products (ctx.stats.gram).
    task_aware: scores each task separately (and applies the safe rule)."""

    name: str
    factory: Callable[[ImportanceContext], Importance]
    needs_gradients: bool = False
    conflict: bool = False
    task_aware: bool = False

    def __str__(self) -> str:
        return f"{self.factory.__module__}.{self.factory.__qualname__}"


IMPORTANCES: Registry[ImportanceEntry] = Registry(
    "importance",
    PruneConfigError,
    listed="registered",
    unknown="{kind} {name} is not registered",
    fix=" (register a new one with compressor.pruning.register_importance)",
)


def register_importance(
    name: str,
    *,
    needs_gradients: bool = False,
    conflict: bool = False,
    task_aware: bool = False,
):
    """Decorator: register `factory(ctx) -> Importance` under `name`. The registry is what
    PruneConfig, `mtc-compress --importance` and `list_importances()` read, so a registered name
    is usable everywhere at once. A name taken already raises."""

    def deco(factory: Callable[[ImportanceContext], Importance]):
        entry = ImportanceEntry(name, factory, needs_gradients or conflict, conflict, task_aware)
        IMPORTANCES.register(name, entry)
        return factory

    return deco


def unregister_importance(name: str) -> None:
    """Remove `name` (tests, or a plugin that replaces its own criterion)."""
    IMPORTANCES.unregister(name)


def list_importances() -> list[str]:
    return IMPORTANCES.names()


def importance_entry(name: str) -> ImportanceEntry:
    """The entry for `name`; an unknown name lists the registered ones and the closest match."""
    return IMPORTANCES.get(name)


def build_importance(ctx: ImportanceContext) -> Importance:
    return importance_entry(ctx.cfg.importance).factory(ctx)


def normalize(x: torch.Tensor, how: str) -> torch.Tensor:
    """Scale the last dim so its mean (or max, or L2 norm) is 1; an all-zero row stays zero."""
    if how == "mean":
        d = x.mean(-1, keepdim=True)
    elif how == "max":
        d = x.amax(-1, keepdim=True)
    else:
        d = x.norm(dim=-1, keepdim=True)
    return _safe_div(x, d)


def _none_safe(n: int) -> torch.Tensor:
    return torch.zeros(n, dtype=torch.bool)


@register_importance("random")
def random_importance(ctx: ImportanceContext) -> Importance:
    def score(group: ChannelGroup) -> GroupScores:
        gen = torch.Generator().manual_seed(ctx.cfg.seed * 1_000_003 + group.index)
        return GroupScores(torch.rand(group.size, generator=gen), _none_safe(group.size))

    return score


@register_importance("l1")
def l1_importance(ctx: ImportanceContext) -> Importance:
    """Magnitude baseline: L1 norm of each channel's conv/linear weights across the group."""

    def per_slice(s):
        if s.kind == ELEM:
            return None
        m = ctx.modules[s.module]
        return channel_sums(m, s.kind, {"weight": m.weight.detach().abs()})

    def score(group: ChannelGroup) -> GroupScores:
        raw = group.gather(per_slice)
        return GroupScores(normalize(raw, ctx.cfg.normalize), _none_safe(group.size))

    return score


def _need_stats(ctx: ImportanceContext) -> CalibrationStats:
    if ctx.stats is None:
        raise PruneConfigError(f"importance {ctx.cfg.importance!r} needs calibration statistics")
    return ctx.stats


def _taylor_terms(stats: CalibrationStats, group: ChannelGroup) -> torch.Tensor:
    """[T, B, n]: sum over the channel's parameters of w * dL_t/dw, per task and batch."""
    return group.gather(lambda s: stats.taylor.get((s.module, s.kind)))


@register_importance("taylor_sum", needs_gradients=True)
def taylor_sum_importance(ctx: ImportanceContext) -> Importance:
    """Baseline: Taylor importance of the summed loss (tasks not told apart)."""
    stats = _need_stats(ctx)

    def score(group: ChannelGroup) -> GroupScores:
        raw = _taylor_terms(stats, group).sum(0).abs().mean(0)
        return GroupScores(normalize(raw, ctx.cfg.normalize), _none_safe(group.size))

    return score


def task_weights(ctx: ImportanceContext, tasks: tuple[str, ...]) -> torch.Tensor:
    given = dict(ctx.cfg.task_weights)
    unknown = sorted(set(given) - set(tasks))
    if unknown:
        raise PruneConfigError(
            f"task_weights names {unknown}, which the loss does not return; tasks: {list(tasks)}"
        )
    return torch.tensor([float(given.get(t, 1.0)) for t in tasks])


def aggregate(per_task: torch.Tensor, how: str, weights: torch.Tensor) -> torch.Tensor:
    """Combine normalised per-task importances [T, n] into one [n]."""
    if how == "max":
        return per_task.amax(0)
    if how == "mean":
        return per_task.mean(0)
    if how == "sum":
        return per_task.sum(0)
    return (weights[:, None] * per_task).sum(0)


def safe_mask(per_task: torch.Tensor, q: float) -> torch.Tensor:
    """Channels in the top q of any task that uses the group (an all-zero task row is a task
    this group does not serve, so it protects nothing)."""
    n = per_task.shape[-1]
    safe = _none_safe(n)
    if q <= 0:
        return safe
    k = max(1, math.ceil(q * n))
    for row in per_task:
        if float(row.max()) > 0:
            safe[torch.topk(row, k).indices] = True
    return safe


def conflict(gram: torch.Tensor) -> torch.Tensor:
    """C(c) = mean over task pairs of max(0, -cos(g_s(c), g_t(c))), from [T, T, n] dot products."""
    n_tasks = gram.shape[0]
    if n_tasks < 2:
        return torch.zeros(gram.shape[-1])
    gram = gram.double()  # squared gradients underflow float32 products on small layers
    norm = torch.stack([gram[t, t] for t in range(n_tasks)]).clamp_min(0).sqrt()
    terms = []
    for s in range(n_tasks):
        for t in range(s + 1, n_tasks):
            cos = _safe_div(gram[s, t], norm[s] * norm[t])
            terms.append((-cos).clamp(0, 1))
    return torch.stack(terms).mean(0).float()


def rescale(score: torch.Tensor, agg: torch.Tensor, cfg: PruneConfig) -> torch.Tensor:
    """Make scores of different groups comparable for the global ranking. The max over T tasks
    of per-task-normalised values grows with the number of tasks a group serves, so without
    this, groups one task uses alone (a detection neck, a seg head) look less important than
    shared ones and lose more channels *(ours)*. 'aggregate' divides by the group norm of the
    aggregated importance (the conflict penalty still moves scores across groups); 'score'
    normalises the final score (it only reorders within a group); 'none' = METHOD.md literally."""
    return _safe_div(score, rescale_divisor(score, agg, cfg))


def rescale_divisor(score: torch.Tensor, agg: torch.Tensor, cfg: PruneConfig) -> torch.Tensor:
    """What `rescale` divides a group's scores by (a block is divided by its channels')."""
    if cfg.group_rescale == "aggregate":
        return _norm(agg, cfg.normalize)
    if cfg.group_rescale == "score":
        return _norm(score.clamp_min(0), cfg.normalize)
    return torch.ones(())


def _norm(x: torch.Tensor, how: str) -> torch.Tensor:
    if how == "mean":
        return x.mean()
    if how == "max":
        return x.amax()
    return x.norm()


def _penalise(agg: torch.Tensor, c: torch.Tensor, cfg: PruneConfig) -> torch.Tensor:
    lam = cfg.conflict_lambda
    return agg * (1 - lam * c) if cfg.conflict_mode == "multiplicative" else agg - lam * c


def _task_aware(ctx: ImportanceContext, with_conflict: bool) -> Importance:
    stats, cfg = _need_stats(ctx), ctx.cfg
    weights = task_weights(ctx, stats.tasks)

    def score(group: ChannelGroup) -> GroupScores:
        per_task = normalize(_taylor_terms(stats, group).abs().mean(1), cfg.normalize)
        agg = aggregate(per_task, cfg.aggregate, weights)
        imp, c = agg, None
        if with_conflict:
            c = conflict(group.gather(lambda s: stats.gram.get((s.module, s.kind))))
            imp = _penalise(agg, c, cfg)
        imp = rescale(imp, agg, cfg)
        return GroupScores(imp, safe_mask(per_task, cfg.safe_top_q), per_task, c)

    return score


def block_score(ctx: ImportanceContext, block: str, unit: list[ChannelGroup]) -> GroupScores:
    """One removable block scored in the units of the channels of `unit` (the groups inside
    it), by the rule that scores those channels: its per-task Taylor value |dL_t/dy . (y - x)|
    (averaged over batches) is divided by the channels' per-task normalisation, aggregated
    over tasks, penalised by the conflict of its parameters' task gradients and divided by what
    the channels' scores were rescaled by. A block worth its channels' sum therefore costs the
    knapsack as much as removing all of them. The safe rule across blocks is `block_safe`."""
    stats, cfg = _need_stats(ctx), ctx.cfg
    entry = importance_entry(cfg.importance)
    terms = torch.cat([_taylor_terms(stats, g) for g in unit], -1)  # [T, B, n]
    taylor = stats.block_taylor[block].to(terms.dtype)  # [T, B]
    if not entry.task_aware:  # one Taylor value of the summed loss, as taylor_sum does
        den = _norm(terms.sum(0).abs().mean(0), cfg.normalize)
        raw = taylor.sum(0).abs().mean(0).view(1)
        return GroupScores(_safe_div(raw, den), torch.zeros(1, dtype=torch.bool))
    raw_c = terms.abs().mean(1)  # [T, n]
    den = torch.stack([_norm(row, cfg.normalize) for row in raw_c])[:, None]  # [T, 1]
    per_task_c = _safe_div(raw_c, den.expand_as(raw_c))
    per_task = _safe_div(taylor.abs().mean(1)[:, None], den)  # [T, 1]
    weights = task_weights(ctx, stats.tasks)
    agg_c, agg = (aggregate(p, cfg.aggregate, weights) for p in (per_task_c, per_task))
    imp_c, imp, c = agg_c, agg, None
    if entry.conflict:
        c = conflict(stats.block_gram[block][..., None])
        c_c = conflict(
            torch.cat([g.gather(lambda s: stats.gram.get((s.module, s.kind))) for g in unit], -1)
        )
        imp, imp_c = _penalise(agg, c, cfg), _penalise(agg_c, c_c, cfg)
    score = _safe_div(imp, rescale_divisor(imp_c, agg_c, cfg))
    return GroupScores(score, torch.zeros(1, dtype=torch.bool), per_task[:, 0], c)


def block_safe(per_task: torch.Tensor, cfg: PruneConfig) -> torch.Tensor:
    """The safe rule across the removable blocks ([T, n_blocks] per-task importances): a block
    in the top safe_top_q of any task's blocks is never removed."""
    if not importance_entry(cfg.importance).task_aware:
        return torch.zeros(per_task.shape[-1], dtype=torch.bool)
    return safe_mask(per_task, cfg.safe_top_q)


@register_importance("tci", needs_gradients=True, task_aware=True)
def tci_importance(ctx: ImportanceContext) -> Importance:
    """Task-aware Taylor channel importance: per task, normalised, aggregated; safe rule."""
    return _task_aware(ctx, with_conflict=False)


@register_importance("tci_gcp", conflict=True, task_aware=True)
def tci_gcp_importance(ctx: ImportanceContext) -> Importance:
    """TCI with the gradient-conflict penalty."""
    return _task_aware(ctx, with_conflict=True)
