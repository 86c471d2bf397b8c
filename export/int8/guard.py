"""The per-task INT8 guard: quantise everything, score every task against the FP32 export, and
where a task is over its budget find the layers that must stay in higher precision.

Search (every acceptance is the deployed task metric on the guard images, `export.int8` docs):
1. Score FP32 and all-INT8. Every task within budget: done, nothing falls back.
2. Sensitivity: the harm each layer group does to each guarded metric. With a `proxy` (the
   default in the export: per-task disagreement of the outputs with the FP32 export's, over
   every box and pixel), a group's harm is the disagreement of the model with only that group
   in INT8: dense, so it ranks groups that a task metric on a few dozen frames cannot tell
   apart. Without one, it is what leaving the group out of INT8 recovers of each metric.
3. Rank: each group's share of the harm to the metrics over budget (weighted by how far over
   they are), divided by its share of the conv FLOPs (`cost`): first the groups that do the
   most harm for the least INT8 speed given up.
4. Fall back the shortest prefix of that ranking that brings every task within budget (found by
   bisection on the prefix length, each candidate scored on the task metrics).
5. Re-quantise: try each fallen-back group again, the most FLOPs first; keep it in INT8 where
   every task stays within budget.
If every group has fallen back and a task is still over budget, no layer choice meets it
(`Int8Error`, raised by the caller with what it keeps).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import onnx
from tqdm import tqdm

from export.int8.qdq import QuantLayer, insert_qdq

# Guarded metrics (summary keys of the evaluation report) and their default budgets: the most
# a metric may drop from the FP32 export, in points.
DEFAULT_BUDGETS: dict[str, float] = {
    "det_recall": 1.0,
    "det_map50": 1.0,
    "drivable_miou": 0.5,
    "lane_iou": 1.0,
}

Scorer = Callable[[onnx.ModelProto], dict]  # model -> evaluation summary (metrics in [0, 1])
Proxy = Callable[[onnx.ModelProto], dict]  # model -> guarded metric -> disagreement (>= 0)
_MIN_COST = 1e-3  # a group's FLOPs share is at least this in the ranking


def deltas(summary: Mapping[str, float], ref: Mapping[str, float], keys: Sequence[str]) -> dict:
    """summary - ref in points, for the guarded metrics both have."""
    return {k: 100.0 * (summary[k] - ref[k]) for k in keys if k in summary and k in ref}


def over_budget(d: Mapping[str, float], budgets: Mapping[str, float]) -> dict[str, float]:
    """Metric -> how far past its budget it dropped (points); empty when all are within."""
    return {k: -v - budgets[k] for k, v in d.items() if k in budgets and -v > budgets[k] + 1e-9}


@dataclass
class GuardStep:
    action: str  # "all", "sensitivity", "fallback", "requantize"
    group: str | None  # sensitivity/requantize: the group; fallback: the prefix's last group
    deltas: dict[str, float]  # task metrics vs FP32 (points); sensitivity with a proxy: {}
    ok: bool
    harm: dict[str, float] = field(default_factory=dict)  # sensitivity: the group's harm
    groups: int = 0  # fallback: groups in FP16 for this candidate


@dataclass
class GuardResult:
    fallback: list[str]  # group names left in higher precision, most harmful per FLOP first
    reasons: dict[str, str]  # group -> why it stayed out of INT8
    model: onnx.ModelProto
    layers: list[QuantLayer]  # the quantised layers
    deltas: dict[str, float]  # final INT8 - FP32, points
    all_int8_deltas: dict[str, float]
    sensitivity: dict[str, dict[str, float]] = field(default_factory=dict)  # group -> harm
    steps: list[GuardStep] = field(default_factory=list)
    scored: int = 0  # models scored on the task metrics by the search
    summary: dict = field(default_factory=dict)  # the final model's evaluation summary
    ranking: str = "metrics"  # what measured the sensitivity: "proxy" or "metrics"


class Int8Search:
    def __init__(
        self,
        fp32: onnx.ModelProto,
        amax: Mapping[str, float],
        groups: Mapping[str, Sequence[str]],
        score: Scorer,
        budgets: Mapping[str, float] = DEFAULT_BUDGETS,
        ops: Sequence[str] = ("Conv",),
        exclude: Sequence[str] = (),
        progress: bool = True,
        proxy: Proxy | None = None,
        cost: Mapping[str, float] | None = None,
    ) -> None:
        self.fp32, self.amax, self.groups = fp32, amax, dict(groups)
        self.score_fn, self.budgets, self.ops = score, dict(budgets), tuple(ops)
        self.exclude, self.progress = tuple(exclude), progress
        self.proxy = proxy
        self.cost = {g: max(_MIN_COST, (cost or {}).get(g, 1.0)) for g in self.groups}
        self.ref: dict = {}
        self.scored = 0
        # fallback set -> evaluation summary: each set is scored once
        self._summaries: dict[frozenset[str], dict] = {}

    def model_for(self, fallback: Sequence[str]) -> tuple[onnx.ModelProto, list[QuantLayer]]:
        nodes = [n for g in fallback for n in self.groups[g]]
        return insert_qdq(self.fp32, self.amax, [*self.exclude, *nodes], self.ops)

    def _summary(self, fallback: Sequence[str]) -> dict:
        key = frozenset(fallback)
        if key not in self._summaries:
            self.scored += 1
            self._summaries[key] = self.score_fn(self.model_for(fallback)[0])
        return self._summaries[key]

    def _deltas(self, fallback: Sequence[str]) -> dict[str, float]:
        return deltas(self._summary(fallback), self.ref, list(self.budgets))

    def run(
        self,
        ref_summary: Mapping[str, float] | None = None,
        all_int8_summary: Mapping[str, float] | None = None,
    ) -> GuardResult:
        """`ref_summary`, `all_int8_summary`: the FP32 and all-INT8 models' summaries where the
        caller scored them already (else they are scored here)."""
        self.ref = dict(ref_summary) if ref_summary is not None else self.score_fn(self.fp32)
        if all_int8_summary is not None:
            self._summaries.setdefault(frozenset(), dict(all_int8_summary))
        d_all = self._deltas([])
        steps = [GuardStep("all", None, d_all, not over_budget(d_all, self.budgets))]
        fallback: list[str] = []
        reasons: dict[str, str] = {}
        harm: dict[str, dict[str, float]] = {}
        d = d_all
        if over_budget(d_all, self.budgets):
            harm = self._sensitivity(d_all, steps)
            order, why = self._rank(harm, d_all)
            fallback, d = self._fall_back(order, steps)
            fallback, d = self._requantize(fallback, d, steps)
            reasons = {g: why[g] for g in fallback}
        model, layers = self.model_for(fallback)
        return GuardResult(
            fallback,
            reasons,
            model,
            layers,
            d,
            d_all,
            harm,
            steps,
            self.scored,
            self._summary(fallback),
            "proxy" if self.proxy is not None else "metrics",
        )

    def _sensitivity(self, d_all: dict, steps: list[GuardStep]) -> dict[str, dict[str, float]]:
        harm = {}
        for g in tqdm(self.groups, desc="int8 sensitivity", leave=False, disable=not self.progress):
            if self.proxy is not None:  # only g in INT8: the disagreement it causes alone
                alone = [x for x in self.groups if x != g]
                harm[g] = {
                    k: max(0.0, float(v)) for k, v in self.proxy(self.model_for(alone)[0]).items()
                }
                steps.append(GuardStep("sensitivity", g, {}, True, harm[g]))
            else:  # g out of INT8: what it recovers of each metric
                dg = self._deltas([g])
                harm[g] = {k: max(0.0, dg[k] - d_all[k]) for k in dg}
                steps.append(
                    GuardStep("sensitivity", g, dg, not over_budget(dg, self.budgets), harm[g])
                )
        return harm

    def _rank(
        self, harm: dict[str, dict[str, float]], d_all: dict
    ) -> tuple[list[str], dict[str, str]]:
        """Groups by harm to the over-budget metrics per FLOP, most first; and the reason each
        would stay out of INT8."""
        over = over_budget(d_all, self.budgets)
        weight = {k: 1.0 + v / max(self.budgets[k], 1e-3) for k, v in over.items()}
        total = {k: sum(h.get(k, 0.0) for h in harm.values()) for k in over}
        share = {g: {k: harm[g].get(k, 0.0) / total[k] for k in over if total[k] > 0} for g in harm}
        cost_total = sum(self.cost.values())
        priority = {
            g: sum(weight[k] * v for k, v in share[g].items()) / (self.cost[g] / cost_total)
            for g in harm
        }
        order = sorted(self.groups, key=lambda g: -priority[g])
        measure = "output disagreement" if self.proxy is not None else "recoverable loss"
        why = {
            g: f"over budget in INT8 ({_fmt_over(over)}); this group causes "
            + ", ".join(f"{100 * v:.0f} % of the {k} {measure}" for k, v in share[g].items())
            + f" for {100 * self.cost[g] / cost_total:.1f} % of the conv FLOPs"
            for g in harm
        }
        return order, why

    def _fall_back(self, order: list[str], steps: list[GuardStep]) -> tuple[list[str], dict]:
        """The shortest prefix of `order` whose fallback meets every budget (bisection; all of
        it always does when the FP16 export meets them, which the caller checked)."""
        lo, hi = 0, len(order)  # prefix lo fails (lo 0: all INT8), prefix hi is the best known
        bar = tqdm(
            total=max(1, len(order)).bit_length(),
            desc="int8 fallback",
            leave=False,
            disable=not self.progress,
        )
        while hi - lo > 1:
            mid = (lo + hi) // 2
            d = self._deltas(order[:mid])
            ok = not over_budget(d, self.budgets)
            steps.append(GuardStep("fallback", order[mid - 1], d, ok, groups=mid))
            lo, hi = (lo, mid) if ok else (mid, hi)
            bar.update(1)
        bar.close()
        return order[:hi], self._deltas(order[:hi])

    def _requantize(
        self, fallback: list[str], d: dict, steps: list[GuardStep]
    ) -> tuple[list[str], dict]:
        if over_budget(d, self.budgets):
            return fallback, d  # nothing met the budgets: the caller says so
        kept = list(fallback)
        trials = sorted(fallback, key=lambda g: -self.cost[g])  # the most INT8 speed first
        for g in tqdm(trials, desc="int8 re-quantise", leave=False, disable=not self.progress):
            trial = [x for x in kept if x != g]
            dt = self._deltas(trial)
            ok = not over_budget(dt, self.budgets)
            steps.append(GuardStep("requantize", g, dt, ok, groups=len(trial)))
            if ok:
                kept, d = trial, dt
        return kept, d


def _fmt_over(over: Mapping[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f} past budget" for k, v in over.items())


def layer_groups(layers: Sequence[QuantLayer], max_size: int = 8) -> dict[str, list[str]]:
    """Layers grouped by the module that owns them (the ONNX node name's scope path): the
    exporter names nodes `/model/model.24/m.0/Conv`, so a group is a block of the model. The
    common leading scope is dropped; a group of more than `max_size` layers is split by the next
    scope level, so the search never has to keep a whole encoder in FP16 for one layer."""
    paths = {q.node: [p for p in q.node.strip("/").split("/")[:-1] if p] for q in layers}
    common = _common_prefix(list(paths.values()))
    return _split({n: p[common:] for n, p in paths.items()}, "", max_size)


def _common_prefix(paths: list[list[str]]) -> int:
    if not paths:
        return 0
    k = 0
    shortest = min(len(p) for p in paths)
    while k < shortest - 1 and len({p[k] for p in paths}) == 1:
        k += 1
    return k


def _split(paths: dict[str, list[str]], prefix: str, max_size: int) -> dict[str, list[str]]:
    by: dict[str, dict[str, list[str]]] = {}
    for node, p in paths.items():
        key = p[0] if p else node.strip("/")
        by.setdefault(key, {})[node] = p[1:]
    out: dict[str, list[str]] = {}
    for key, members in by.items():
        name = f"{prefix}/{key}" if prefix else key
        if len(members) <= max_size or not any(members.values()):
            out[name] = list(members)
            continue
        heads = {p[0] if p else "" for p in members.values()}
        while len(heads) == 1 and "" not in heads:  # one child scope: look one level deeper
            (only,) = heads
            name = f"{name}/{only}"
            members = {n: p[1:] for n, p in members.items()}
            heads = {p[0] if p else "" for p in members.values()}
        if "" in heads:  # a layer of the block itself: the block stays one group
            out[name] = list(members)
        else:
            out.update(_split(members, name, max_size))
    return out
