"""From scores to a plan: which channels of which group go.

One global ranking of the (group-normalised) scores; the lowest j channels are "wanted out".
Each group then keeps a width that is a multiple of round_to, at least min_width and at least
its safe channels, so it may prune fewer than it is offered but never a safe channel. The
reduction is monotone in j, so a bisection on j finds the smallest cut that meets the target,
measured with the exact cost model (parameters, or MACs for a FLOPs target)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from compressor.pruning.cost import CostModel
from compressor.pruning.group import ChannelGroup
from compressor.pruning.importance import GroupScores


@dataclass
class Plan:
    """Channels to remove per group index, and the exact totals they lead to (of the channel
    cut; `blocks`: residual blocks the latency planner removes, with the ms each saves)."""

    masks: dict[int, torch.Tensor]
    params: int
    macs: int
    cut: int
    blocks: dict[str, float] = field(default_factory=dict)

    def channels(self, group_index: int) -> list[int]:
        m = self.masks.get(group_index)
        return [] if m is None else m.nonzero().view(-1).tolist()


def group_floor(
    size: int, n_safe: int, round_to: int, min_width: int, max_group_ratio: float = 1.0
) -> int:
    """The fewest channels a group of `size` may keep: its safe channels, min_width and, with
    max_group_ratio < 1, (1 - max_group_ratio) of its channels, rounded up to round_to (never
    more than the group has)."""
    kept_share = math.ceil(size * (1.0 - max_group_ratio) - 1e-9)
    return min(size, _round_up(max(min_width, n_safe, kept_share, 1), round_to))


def _round_up(x: int, r: int) -> int:
    return int(math.ceil(x / r) * r)


class Planner:
    """Builds plans for a cut j (number of globally lowest candidate channels)."""

    def __init__(
        self,
        groups: list[ChannelGroup],
        scores: dict[int, GroupScores],
        cost: CostModel,
        round_to: int,
        min_width: int,
        max_group_ratio: float = 1.0,
    ):
        self.groups, self.cost = groups, cost
        self.round_to, self.min_width = round_to, min_width
        self.order: dict[int, torch.Tensor] = {}
        self.floor: dict[int, int] = {}
        cand_scores, cand_groups = [], []
        for g in groups:
            sc = scores[g.index]
            free = (~sc.safe).nonzero().view(-1)
            self.order[g.index] = free[torch.argsort(sc.score[free], stable=True)]
            n_safe = int(sc.safe.sum())
            self.floor[g.index] = group_floor(g.size, n_safe, round_to, min_width, max_group_ratio)
            cand_scores.append(sc.score[free].float())
            cand_groups.append(torch.full((len(free),), g.index, dtype=torch.long))
        all_scores = torch.cat(cand_scores) if cand_scores else torch.zeros(0)
        all_groups = torch.cat(cand_groups) if cand_groups else torch.zeros(0, dtype=torch.long)
        rank = torch.argsort(all_scores, stable=True)
        self.cand_groups = all_groups[rank]
        self.n_candidates = len(rank)

    def keep_width(self, g: ChannelGroup, wanted: int) -> int:
        """Width group g keeps when `wanted` of its channels are offered for removal."""
        keep = max(_round_up(g.size - wanted, self.round_to), self.floor[g.index])
        return min(keep, g.size)

    def masks_at(self, cut: int) -> dict[int, torch.Tensor]:
        counts = torch.bincount(self.cand_groups[:cut], minlength=len(self.groups) + 1)
        masks = {}
        for g in self.groups:
            n_prune = g.size - self.keep_width(g, int(counts[g.index]))
            if n_prune > 0:
                mask = torch.zeros(g.size, dtype=torch.bool)
                mask[self.order[g.index][:n_prune]] = True
                masks[g.index] = mask
        return masks

    def plan_at(self, cut: int) -> Plan:
        masks = self.masks_at(cut)
        params, macs = self.cost.evaluate(masks)
        return Plan(masks, params, macs, cut)

    def search(self, limit: int, metric: str) -> Plan | None:
        """Smallest cut whose params (or MACs) are <= limit; None if even the largest is not."""

        def value(p: Plan) -> int:
            return p.params if metric == "params" else p.macs

        hi_plan = self.plan_at(self.n_candidates)
        if value(hi_plan) > limit:
            return None
        lo, hi = 0, self.n_candidates
        best = hi_plan
        while lo < hi:
            mid = (lo + hi) // 2
            p = self.plan_at(mid)
            if value(p) <= limit:
                hi, best = mid, p
            else:
                lo = mid + 1
        return best
