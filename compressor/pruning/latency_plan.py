"""Planning against a latency table (HALP-style: importance per unit of latency saved).

Every group keeps a width that is a multiple of round_to, at least its floor (min width, safe
channels); its channels leave in order of increasing score. Starting from the full model, the
planner repeatedly takes the step — one group giving up 1..LOOKAHEAD blocks of round_to channels
— with the least importance lost per millisecond saved, as priced by the table, until the
predicted latency reaches the target. The lookahead lets a group cross a latency plateau (a kernel
that is as fast at 56 channels as at 64). A step only re-prices the groups that share a layer with
the group it changed, so the whole plan takes well under a second for a full-size YOLOP.

With depth pruning, removable residual blocks are candidates of the same knapsack: removing one
saves the time of every layer inside it at its current widths and costs its importance, less
what the channel steps inside it already cost (so a block costs the same whichever way the plan
reaches it). A removed block's layers are gone (width 0 in the table's terms) and its inner
groups take no further steps."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from compressor.pruning.errors import ImpossibleTargetError
from compressor.pruning.group import IN, OUT, ChannelGroup
from compressor.pruning.importance import GroupScores
from compressor.pruning.plan import group_floor
from runtime.latency_model.table import LatencyTable, LatencyTableMismatchError

LOOKAHEAD = 4


@dataclass
class _Slice:
    layer: str
    side: int  # 0 = input width, 1 = output width
    lost: list[int]  # lost[n] = this slice's indices removed when a group drops n channels


@dataclass
class _GroupState:
    group: ChannelGroup
    order: torch.Tensor  # free channels, least important first
    cum_score: list[float]  # cum_score[n] = importance of the first n channels of `order`
    floor: int
    keep: int
    slices: list[_Slice] = field(default_factory=list)


@dataclass
class BlockCandidate:
    """A removable block for the planner: its score (in its inner channels' units), the table
    layers inside it, the indices of the groups that live inside it, and the safe rule."""

    name: str
    score: float
    layers: list[str]
    inner: list[int]
    safe: bool = False


def inside(module: str, block: str) -> bool:
    return module == block or module.startswith(block + ".")


class LatencyPricer:
    """Predicted latency of the model when each group keeps `keep[g]` channels. `gone`: blocks
    removed earlier (their layers are absent from the model and priced at width 0)."""

    def __init__(
        self,
        table: LatencyTable,
        model: nn.Module,
        groups: list[ChannelGroup],
        gone: Collection[str] = (),
    ):
        self.table = table
        mods = dict(model.named_modules())
        self.base: dict[str, list[int]] = {}
        for name in table.layers:
            m = mods.get(name)
            if m is None and any(inside(name, b) for b in gone):
                self.base[name] = [0, 0]
                continue
            if m is None:
                raise LatencyTableMismatchError(
                    f"latency table layer {name!r} is not a module of this model: the table "
                    "belongs to another model"
                )
            self.base[name] = [int(m.in_channels), int(m.out_channels)]
        self.groups = groups

    def layer_slices(self, g: ChannelGroup, order: torch.Tensor) -> list[_Slice]:
        out = []
        for s in g.slices:
            if s.module not in self.table.layers or s.kind not in (IN, OUT):
                continue
            side = 0 if s.kind == IN else 1
            info = self.table.layers[s.module]
            if not (info.vary_in if side == 0 else info.vary_out):
                raise LatencyTableMismatchError(
                    f"layer {s.module!r} was measured at a fixed {'input' if side == 0 else 'output'}"
                    " width, but this pruning changes it: the probes were exported with other "
                    "protected layers; export them again with the same --protect settings"
                )
            member = torch.zeros(g.size, dtype=torch.long)
            member[s.root] = 1
            lost = [0, *torch.cumsum(member[order], 0).tolist()]
            out.append(_Slice(s.module, side, lost))
        return out

    def layer_ms(self, widths: dict[str, list[int]], name: str) -> float:
        cin, cout = widths[name]
        return self.table.layer_ms(name, cin, cout)

    def total(self, widths: dict[str, list[int]]) -> float:
        return self.table.predict({n: (w[0], w[1]) for n, w in widths.items()})


class LatencyPlanner:
    def __init__(
        self,
        pricer: LatencyPricer,
        groups: list[ChannelGroup],
        scores: dict[int, GroupScores],
        round_to: int,
        min_width: int,
        max_group_ratio: float = 1.0,
        blocks: Sequence[BlockCandidate] = (),
    ):
        self.pricer, self.round_to = pricer, round_to
        self.states: list[_GroupState] = []
        for g in groups:
            sc = scores[g.index]
            free = (~sc.safe).nonzero().view(-1)
            order = free[torch.argsort(sc.score[free], stable=True)]
            cum = [0.0, *torch.cumsum(sc.score[order].double(), 0).tolist()]
            n_safe = int(sc.safe.sum())
            floor = group_floor(g.size, n_safe, round_to, min_width, max_group_ratio)
            floor = max(floor, g.size - len(order))
            st = _GroupState(g, order, cum, floor, g.size)
            st.slices = pricer.layer_slices(g, order)
            self.states.append(st)
        self.widths = {n: list(w) for n, w in pricer.base.items()}
        self.layer_ms = {n: pricer.layer_ms(self.widths, n) for n in self.widths}
        self.per_volume = pricer.table.per_volume_ms
        self.pixels = {n: ly.out_pixels for n, ly in pricer.table.layers.items()}
        self._init_blocks(blocks)

    def _init_blocks(self, blocks: Sequence[BlockCandidate]) -> None:
        """Blocks are items len(states) + j; neighbours = items that share a layer."""
        position = {st.group.index: i for i, st in enumerate(self.states)}
        self.blocks = list(blocks)
        self.block_inner = [[position[g] for g in b.inner if g in position] for b in self.blocks]
        self.removed_blocks: dict[str, float] = {}  # name -> predicted ms its removal saved
        self.block_lost: dict[str, float] = {}  # name -> importance its removal cost
        self.disabled: set[int] = set()  # inner groups of removed blocks
        self.gone: set[str] = {n for n, w in self.widths.items() if w == [0, 0]}
        layers = [[s.layer for s in st.slices] for st in self.states]
        layers += [list(b.layers) for b in self.blocks]
        by_layer: dict[str, set[int]] = {}
        for i, names in enumerate(layers):
            for name in names:
                by_layer.setdefault(name, set()).add(i)
        self.neighbours = [{j for n in names for j in by_layer[n]} for names in layers]
        for j, inner in enumerate(self.block_inner):  # a block's cost reads its inner groups
            for i in inner:
                self.neighbours[i].add(len(self.states) + j)

    def predicted(self) -> float:
        return self.pricer.total(self.widths)

    def _candidates(self, st: _GroupState) -> list[int]:
        keeps, k = [], st.keep
        for _ in range(LOOKAHEAD):
            k = (k - 1) // self.round_to * self.round_to  # next multiple of round_to below k
            if k < st.floor:
                break
            keeps.append(k)
        return keeps

    def _new_widths(self, st: _GroupState, keep: int) -> dict[str, list[int]]:
        """Widths of the layers `st`'s group touches if it kept `keep` channels."""
        n_old, n_new = st.group.size - st.keep, st.group.size - keep
        changed: dict[str, list[int]] = {}
        for s in st.slices:
            if s.layer in self.gone:
                continue
            w = changed.setdefault(s.layer, list(self.widths[s.layer]))
            w[s.side] -= s.lost[n_new] - s.lost[n_old]
        return changed

    def _saving(self, st: _GroupState, keep: int) -> tuple[float, dict[str, list[int]]]:
        changed = self._new_widths(st, keep)
        saved = 0.0
        for name, w in changed.items():
            saved += self.layer_ms[name] - self.pricer.table.layer_ms(name, w[0], w[1])
            saved += self.per_volume * (self.widths[name][1] - w[1]) * self.pixels[name]
        return saved * self.pricer.table.savings_scale, changed

    def _block_step(self, j: int) -> tuple[float, float, int, dict[str, list[int]]] | None:
        """(importance lost per ms saved, -saved, -1, widths) of removing block j, or None."""
        b = self.blocks[j]
        if b.safe or b.name in self.removed_blocks:
            return None
        live = [n for n in b.layers if n not in self.gone]
        saved = sum(
            self.layer_ms[n] + self.per_volume * self.widths[n][1] * self.pixels[n] for n in live
        )
        saved *= self.pricer.table.savings_scale
        if saved <= 1e-9:
            return None
        paid = sum(self._lost(self.states[i]) for i in self.block_inner[j])
        lost = max(0.0, b.score - paid)
        return lost / saved, -saved, -1, {n: [0, 0] for n in live}

    @staticmethod
    def _lost(st: _GroupState) -> float:
        return st.cum_score[st.group.size - st.keep]

    def _best_step(self, i: int) -> tuple[float, float, int, dict[str, list[int]]] | None:
        if i >= len(self.states):
            return self._block_step(i - len(self.states))
        if i in self.disabled:
            return None
        st = self.states[i]
        best = None
        n_old = st.group.size - st.keep
        for keep in self._candidates(st):
            saved, changed = self._saving(st, keep)
            if saved <= 1e-9:
                continue
            lost = st.cum_score[st.group.size - keep] - st.cum_score[n_old]
            cand = (lost / saved, -saved, keep, changed)
            if best is None or cand[:2] < best[:2]:
                best = cand
        return best

    def run(self, target_ms: float) -> dict[int, int]:
        """Keep widths per group index that bring the prediction to <= target_ms, or raise."""
        current = self.predicted()
        cache = {i: self._best_step(i) for i in range(len(self.states) + len(self.blocks))}
        while current > target_ms:
            options = [(c[0], c[1], i) for i, c in cache.items() if c is not None]
            if not options:
                break
            per_ms, neg_saved, i = min(options)
            _, _, keep, changed = cache[i]  # type: ignore[misc]
            if i >= len(self.states):
                self._remove_block(i - len(self.states), -neg_saved, per_ms * -neg_saved)
            else:
                self.states[i].keep = keep
            for name, w in changed.items():
                self.widths[name] = w
                self.layer_ms[name] = (
                    0.0 if name in self.gone else self.pricer.layer_ms(self.widths, name)
                )
            current = self.predicted()
            for j in self.neighbours[i]:
                cache[j] = self._best_step(j)
        return {st.group.index: st.keep for st in self.states}

    def lost(self) -> float:
        """The knapsack's objective so far: the scores of the channels it removed plus what the
        removed blocks cost (comparable between plans of the same scores, e.g. with and
        without depth)."""
        return sum(self._lost(st) for st in self.states) + sum(self.block_lost.values())

    def _remove_block(self, j: int, saved: float, lost: float) -> None:
        b = self.blocks[j]
        self.removed_blocks[b.name] = saved
        self.block_lost[b.name] = lost
        self.gone.update(b.layers)
        self.disabled.update(self.block_inner[j])

    def masks(self, keeps: dict[int, int]) -> dict[int, torch.Tensor]:
        """Channels to remove per group; none from the inner groups of removed blocks."""
        masks = {}
        for i, st in enumerate(self.states):
            if i in self.disabled:
                continue
            n = st.group.size - keeps[st.group.index]
            if n > 0:
                mask = torch.zeros(st.group.size, dtype=torch.bool)
                mask[st.order[:n]] = True
                masks[st.group.index] = mask
        return masks


def impossible_latency(
    ratio: float,
    table: LatencyTable,
    teacher_ms: float,
    planner: LatencyPlanner,
    fixed: list[tuple[str, float]],
) -> ImpossibleTargetError:
    """The error for an unreachable latency target; `planner` has been run to its floors."""
    floor_ms = planner.predicted()
    in_layers = sum(planner.layer_ms.values()) * table.savings_scale
    top = ", ".join(f"{n} {ms:.2f} ms" for n, ms in fixed[:4])
    held = f"protected / output layers that never change: {top}; " if top else ""
    return ImpossibleTargetError(
        f"cannot remove {ratio:.1%} of the predicted latency ({teacher_ms:.2f} ms on "
        f"{table.key.backend} {table.key.precision}, batch {table.key.batch}): with every prunable "
        f"group at its minimum width at most {1 - floor_ms / teacher_ms:.1%} can be removed. "
        f"At those widths the layers still take {in_layers:.2f} ms (per-op cost that narrowing "
        f"does not remove) and {floor_ms - in_layers:.2f} ms go to everything else; {held}"
        "lower the ratio or min_width, raise max_group_ratio, protect fewer layers, or compress a "
        "larger input size where compute, not per-op overhead, dominates"
    )
