"""Depth pruning: whole residual blocks as candidates beside the channel steps (MDP-style).

Which blocks may go is declared by the model spec (`removable_blocks`: module paths whose
forward is x + f(x)), never guessed; a removed block becomes the identity. Per task, a block is
scored by the first-order Taylor estimate of removing its branch, dL_t/dy . (y - x) for its
output y (calibrate), in the units of the channels inside it, with the conflict penalty of its
parameters' task gradients and the safe rule across blocks (importance.block_score). Its
latency is the table's time of every layer inside it at its current widths, and the latency
planner weighs it against the channel steps in one knapsack."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from compressor.models.reshape import remove_blocks
from compressor.pruning.errors import PruneConfigError
from compressor.pruning.group import ChannelGroup
from compressor.pruning.importance import (
    GroupScores,
    ImportanceContext,
    block_safe,
    block_score,
)
from compressor.pruning.latency_plan import BlockCandidate, inside
from compressor.pruning.record import KeepTracker
from runtime.latency_model.table import LatencyTable


def matches(name: str, pattern: str) -> bool:
    """A module path against a declared block: `*` matches one path segment."""
    a, b = name.split("."), pattern.split(".")
    return len(a) == len(b) and all(fnmatch.fnmatchcase(x, y) for x, y in zip(a, b))


def resolve_blocks(
    model: nn.Module, patterns: Sequence[str], protected: Iterable[str] = ()
) -> list[str]:
    """The blocks the patterns name that can still go: not removed already (an identity has
    no parameters) and holding no protected module. A pattern that names no module is an
    error (a spec that does not fit its model)."""
    mods = dict(model.named_modules())
    keep = tuple(protected)
    found: list[str] = []
    for pattern in patterns:
        hits = [n for n in mods if n and matches(n, pattern)]
        if not hits:
            raise PruneConfigError(
                f"removable block {pattern!r} matches no module of {type(model).__name__} "
                "(module paths as in model.named_modules(); `*` = one path segment)"
            )
        for n in hits:
            live = next(mods[n].parameters(), None) is not None
            guarded = any(inside(p, n) or inside(n, p) for p in keep)
            if live and not guarded and n not in found:
                found.append(n)
    return found


def no_blocks_error(model: nn.Module) -> PruneConfigError:
    name = getattr(model, "model_name", None) or type(model).__name__
    return PruneConfigError(
        f"--depth: model {name!r} declares no removable blocks (its spec's removable_blocks is "
        "empty), so there is nothing to remove but channels; drop --depth to prune channels only"
    )


@dataclass
class Block:
    """A removable block of the traced model: the groups living inside it (removed with it)
    and the groups whose channels are its importance unit (those, else the ones touching it,
    else all)."""

    name: str
    inner: list[int]
    unit: list[int]


def describe(names: list[str], groups: list[ChannelGroup]) -> list[Block]:
    blocks = []
    for name in names:
        inner = [g.index for g in groups if all(inside(s.module, name) for s in g.slices)]
        touching = [g.index for g in groups if any(inside(s.module, name) for s in g.slices)]
        blocks.append(Block(name, inner, inner or touching or [g.index for g in groups]))
    return blocks


class DepthPruning:
    """The removable blocks of one prune() call across its iterative steps."""

    def __init__(self, patterns: Sequence[str], protected: Iterable[str]):
        self.patterns, self.protected = tuple(patterns), tuple(protected)
        self.blocks: list[Block] = []
        self.scores: dict[str, GroupScores] = {}
        self.safe: dict[str, bool] = {}
        self.removed: list[str] = []
        self.rows: list[dict] = []
        self.tasks: tuple[str, ...] = ()

    def build(self, model: nn.Module, groups: list[ChannelGroup]) -> None:
        names = resolve_blocks(model, self.patterns, self.protected)
        self.blocks = describe(names, groups)
        self.scores, self.safe = {}, {}

    def modules(self, model: nn.Module) -> dict[str, nn.Module]:
        mods = dict(model.named_modules())
        return {b.name: mods[b.name] for b in self.blocks}

    def score(self, ctx: ImportanceContext, groups: list[ChannelGroup]) -> None:
        by_index = {g.index: g for g in groups}
        self.tasks = ctx.stats.tasks if ctx.stats is not None else ()
        self.scores = {
            b.name: block_score(ctx, b.name, [by_index[i] for i in b.unit]) for b in self.blocks
        }
        if not self.blocks:
            return
        per_task = [s.per_task for s in self.scores.values()]
        if all(p is not None for p in per_task):
            safe = block_safe(torch.stack(per_task, -1), ctx.cfg)  # type: ignore[arg-type]
        else:
            safe = torch.zeros(len(self.blocks), dtype=torch.bool)
        self.safe = {b.name: bool(s) for b, s in zip(self.blocks, safe)}

    def candidates(self, table: LatencyTable) -> list[BlockCandidate]:
        """For the planner; unscored (before calibration: the reachability check) = free."""
        out = []
        for b in self.blocks:
            sc = self.scores.get(b.name)
            out.append(
                BlockCandidate(
                    b.name,
                    float(sc.score[0]) if sc is not None else 0.0,
                    [n for n in table.layers if inside(n, b.name)],
                    b.inner,
                    self.safe.get(b.name, False),
                )
            )
        return out

    def execute(
        self, model: nn.Module, names: Sequence[str], tracker: KeepTracker, saved: dict
    ) -> None:
        """Replace the blocks by the identity and record them (report rows included)."""
        remove_blocks(model, names)
        tracker.drop_blocks(list(names))
        for name in names:
            row = {**self._row(name), "saved_ms": round(float(saved.get(name, 0.0)), 4)}
            self.rows.append(row)
        self.removed += list(names)

    def _row(self, name: str) -> dict:
        """A block's scores for the report: score, per-task importance, conflict."""
        row: dict = {"block": name}
        sc = self.scores.get(name)
        if sc is None:
            return row
        row["score"] = round(float(sc.score[0]), 6)
        if sc.per_task is not None:
            row["per_task"] = {t: round(float(v), 6) for t, v in zip(self.tasks, sc.per_task)}
        if sc.conflict is not None:
            row["conflict"] = round(float(sc.conflict[0]), 6)
        return row

    def report(self) -> dict:
        kept = [
            {**self._row(b.name), "safe": self.safe.get(b.name, False)}
            for b in self.blocks
            if b.name not in self.removed and b.name in self.scores
        ]
        return {"patterns": list(self.patterns), "removed": self.rows, "kept": kept}
