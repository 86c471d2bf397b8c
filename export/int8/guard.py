"""The per-task INT8 guard: quantise everything, score every task against the FP32 export, and
where a task is over its budget find the layers that must stay in higher precision.

Search (every score is the deployed metric on the guard images, `export.int8` docs):
1. Score FP32 and all-INT8. Every task within budget: done, nothing falls back.
2. Sensitivity: for each layer group, score all-INT8 with only that group left out; its
   *benefit* per task is that score minus the all-INT8 score, in points. A group's harm is the
   sum, over the metrics that are over budget, of benefit / budget.
3. Fall back the most harmful group, score, repeat until every task is within budget (each step
   re-scores the model as it stands, so interactions between groups are measured, not assumed).
4. Re-quantise: try each fallen-back group again, least harmful first; keep it in INT8 where
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


def deltas(summary: Mapping[str, float], ref: Mapping[str, float], keys: Sequence[str]) -> dict:
    """summary - ref in points, for the guarded metrics both have."""
    return {k: 100.0 * (summary[k] - ref[k]) for k in keys if k in summary and k in ref}


def over_budget(d: Mapping[str, float], budgets: Mapping[str, float]) -> dict[str, float]:
    """Metric -> how far past its budget it dropped (points); empty when all are within."""
    return {k: -v - budgets[k] for k, v in d.items() if k in budgets and -v > budgets[k] + 1e-9}


@dataclass
class GuardStep:
    action: str  # "all", "sensitivity", "fallback", "requantize"
    group: str | None
    deltas: dict[str, float]
    ok: bool


@dataclass
class GuardResult:
    fallback: list[str]  # group names left in higher precision, in the order they fell back
    reasons: dict[str, str]  # group -> why it stayed out of INT8
    model: onnx.ModelProto
    layers: list[QuantLayer]  # the quantised layers
    deltas: dict[str, float]  # final INT8 - FP32, points
    all_int8_deltas: dict[str, float]
    sensitivity: dict[str, dict[str, float]] = field(default_factory=dict)  # group -> benefit
    steps: list[GuardStep] = field(default_factory=list)
    scored: int = 0  # models scored by the search
    summary: dict = field(default_factory=dict)  # the final model's evaluation summary


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
    ) -> None:
        self.fp32, self.amax, self.groups = fp32, amax, dict(groups)
        self.score_fn, self.budgets, self.ops = score, dict(budgets), tuple(ops)
        self.exclude, self.progress = tuple(exclude), progress
        self.ref: dict = {}
        self.scored = 0
        # fallback set -> evaluation summary: a set is scored once (the first fallback is the
        # sensitivity run of that group; the final model is one the search scored already)
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

    def run(self, ref_summary: Mapping[str, float] | None = None) -> GuardResult:
        self.ref = dict(ref_summary) if ref_summary is not None else self.score_fn(self.fp32)
        d_all = self._deltas([])
        steps = [GuardStep("all", None, d_all, not over_budget(d_all, self.budgets))]
        fallback: list[str] = []
        reasons: dict[str, str] = {}
        sens: dict[str, dict[str, float]] = {}
        d = d_all
        if over_budget(d_all, self.budgets):
            sens = self._sensitivity(d_all, steps)
            order = sorted(self.groups, key=lambda g: -self._harm(sens[g], d_all))
            fallback, d = self._fall_back(order, d_all, sens, reasons, steps)
            fallback, d = self._requantize(fallback, d, reasons, steps)
        model, layers = self.model_for(fallback)
        return GuardResult(
            fallback,
            reasons,
            model,
            layers,
            d,
            d_all,
            sens,
            steps,
            self.scored,
            self._summary(fallback),
        )

    def _harm(self, benefit: Mapping[str, float], d_all: Mapping[str, float]) -> float:
        over = over_budget(d_all, self.budgets)
        return sum(benefit.get(k, 0.0) / max(self.budgets[k], 1e-3) for k in over)

    def _sensitivity(self, d_all: dict, steps: list[GuardStep]) -> dict[str, dict[str, float]]:
        sens = {}
        for g in tqdm(self.groups, desc="int8 sensitivity", leave=False, disable=not self.progress):
            dg = self._deltas([g])
            sens[g] = {k: dg[k] - d_all[k] for k in dg}
            steps.append(GuardStep("sensitivity", g, dg, not over_budget(dg, self.budgets)))
        return sens

    def _fall_back(
        self,
        order: list[str],
        d: dict,
        sens: dict,
        reasons: dict[str, str],
        steps: list[GuardStep],
    ) -> tuple[list[str], dict]:
        fallback: list[str] = []
        bar = tqdm(total=len(order), desc="int8 fallback", leave=False, disable=not self.progress)
        for g in order:
            over = over_budget(d, self.budgets)
            if not over:
                break
            fallback.append(g)
            gained = ", ".join(f"{k} {sens[g].get(k, 0.0):+.2f}" for k in over)
            reasons[g] = (
                f"over budget in INT8 ({_fmt_over(over)}); left alone it recovers {gained} points"
            )
            d = self._deltas(fallback)
            steps.append(GuardStep("fallback", g, d, not over_budget(d, self.budgets)))
            bar.update(1)
        bar.close()
        return fallback, d

    def _requantize(
        self, fallback: list[str], d: dict, reasons: dict[str, str], steps: list[GuardStep]
    ) -> tuple[list[str], dict]:
        if over_budget(d, self.budgets):
            return fallback, d  # nothing met the budgets: the caller says so
        kept = list(fallback)
        bar = tqdm(
            reversed(fallback),
            total=len(fallback),
            desc="int8 re-quantise",
            leave=False,
            disable=not self.progress,
        )
        for g in bar:  # the least harmful fell back last
            trial = [x for x in kept if x != g]
            dt = self._deltas(trial)
            ok = not over_budget(dt, self.budgets)
            steps.append(GuardStep("requantize", g, dt, ok))
            if ok:
                kept, d = trial, dt
                reasons.pop(g, None)
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
