"""`prune`: task-aware structural pruning of any multi-task model.

graph (DepGraph groups, protected layers) -> calibration (per-task gradients) -> importance
(scores per group) -> plan (global ranking, round_to, min width, exact target search) ->
execution (Torch-Pruning removes the channels: a real, smaller network) -> record + report.
With iterative_steps = K the loop runs K times towards ratio * k / K, re-calibrating on the
pruned model, with the caller's fine-tune callback between steps."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

from compressor.flops import count_cost
from compressor.models.reshape import remove_blocks
from compressor.pruning.calibrate import LossFn, batch_images, calibrate
from compressor.pruning.config import PruneConfig, resolve_round_to
from compressor.pruning.cost import CostModel
from compressor.pruning.depth import DepthPruning, no_blocks_error
from compressor.pruning.errors import (
    CalibrationError,
    ImpossibleTargetError,
    PruneConfigError,
    PruningGraphError,
)
from compressor.pruning.graph import PruneGraph
from compressor.pruning.group import ChannelGroup
from compressor.pruning.importance import GroupScores, ImportanceContext, build_importance
from compressor.pruning.latency_plan import (
    LatencyPlanner,
    LatencyPricer,
    impossible_latency,
)
from compressor.pruning.plan import Plan, Planner
from compressor.pruning.record import RECORD_FORMAT, RECORD_VERSION, KeepTracker
from compressor.pruning.report import PruneReport, StepReport
from runtime.latency_model.table import (
    Anchor,
    LatencyTable,
    LatencyTableMismatchError,
    check_grid,
    load_table,
)

FinetuneFn = Callable[[nn.Module, int], None]
MeasureFn = Callable[[nn.Module], float]
LATENCY_TOLERANCE = 0.01  # a plan measured within 1 % of the target is taken as it is


@dataclass
class PruneResult:
    """The pruned model (same object, pruned in place), the JSON-able pruning record for the
    checkpoint, and the report."""

    model: nn.Module
    record: dict
    report: PruneReport


def _example_input(example_inputs: torch.Tensor | None, batches: Iterable) -> torch.Tensor:
    if example_inputs is not None:
        return example_inputs[:1]
    for batch in batches:
        return batch_images(batch)[:1]
    raise CalibrationError("no calibration batches and no example_inputs: nothing to trace with")


def _unscored(groups: list[ChannelGroup]) -> dict[int, GroupScores]:
    """Zero scores and no safe channel: every group can go down to its structural floor."""
    return {
        g.index: GroupScores(torch.zeros(g.size), torch.zeros(g.size, dtype=torch.bool))
        for g in groups
    }


def _structural_floor(
    graph: PruneGraph, cost: CostModel, cfg: PruneConfig, round_to: int
) -> tuple[int, int]:
    """(params, MACs) with every prunable group at its minimum allowed width."""
    planner = Planner(
        graph.groups,
        _unscored(graph.groups),
        cost,
        round_to,
        cfg.min_width,
        cfg.max_group_ratio,
    )
    p = planner.plan_at(planner.n_candidates)
    return p.params, p.macs


def _impossible(cfg: PruneConfig, best_ratio: float, why: str) -> ImpossibleTargetError:
    return ImpossibleTargetError(
        f"cannot remove {cfg.ratio:.1%} of {cfg.target}: {why} at most {best_ratio:.1%} can be "
        f"removed (round_to {cfg.round_to}, min_width {cfg.min_width}{_cap_text(cfg)}); lower "
        "the ratio, lower min_width, raise max_group_ratio, or protect fewer layers"
    )


def _cap_text(cfg: PruneConfig) -> str:
    return f", max_group_ratio {cfg.max_group_ratio}" if cfg.max_group_ratio < 1 else ""


class _Session:
    """State of one prune() call across its iterative steps."""

    def __init__(
        self,
        model,
        loss_fn,
        batches,
        cfg,
        example,
        protected,
        progress,
        table=None,
        measure=None,
        blocks: Sequence[str] = (),
    ):
        self.round_to_setting = cfg.round_to
        self.round_to, self.round_to_source = _round_to_of(cfg, table)
        cfg = replace(cfg, round_to=self.round_to)
        self.measure: MeasureFn | None = measure
        self.calibration: list[dict] = []
        self.model, self.loss_fn, self.batches, self.cfg = model, loss_fn, batches, cfg
        self.example, self.progress = example, progress
        self.protected = tuple(cfg.protected) + tuple(protected)
        self.depth = DepthPruning(blocks, self.protected) if cfg.depth else None
        self.hw = tuple(cfg.flops_input_hw) if cfg.flops_input_hw else tuple(example.shape[-2:])
        self.table: LatencyTable | None = table
        if self.table is not None:
            check_table_fits(self.table, model, example.shape[1])
        self.tracker = KeepTracker(model)
        self.before_widths = self.tracker.snapshot()
        cost0 = count_cost(model, self.hw, in_channels=example.shape[1])
        self.params0, self.macs0 = cost0.params, cost0.macs
        self.graph, self.cost = self._build(cost0)
        self.lat0 = self.table.predict(_conv_widths(model, self.table)) if self.table else None
        self.steps: list[StepReport] = []
        self.importance_lost: float | None = None  # the last latency plan's objective

    def _build(self, cost=None) -> tuple[PruneGraph, CostModel]:
        graph = PruneGraph(self.model, self.example, self.protected, self.cfg.protect_outputs)
        cost = cost or count_cost(self.model, self.hw, in_channels=self.example.shape[1])
        if self.depth is not None:
            self.depth.build(self.model, graph.groups)
        return graph, CostModel(self.model, graph.groups, cost.layers)

    def check_reachable(self) -> None:
        if self.table is not None:
            return self._check_latency_reachable()
        params, macs = _structural_floor(self.graph, self.cost, self.cfg, self.round_to)
        reached = params if self.cfg.target == "params" else macs
        base = self.params0 if self.cfg.target == "params" else self.macs0
        if reached > (1 - self.cfg.ratio) * base:
            raise _impossible(self.cfg, 1 - reached / base, "with the protected layers fixed,")

    def _latency_planner(self, scores: dict[int, GroupScores]) -> LatencyPlanner:
        assert self.table is not None
        gone = self.depth.removed if self.depth is not None else ()
        pricer = LatencyPricer(self.table, self.model, self.graph.groups, gone)
        c = self.cfg
        blocks = self.depth.candidates(self.table) if self.depth is not None else ()
        return LatencyPlanner(
            pricer, self.graph.groups, scores, self.round_to, c.min_width, c.max_group_ratio, blocks
        )

    def _check_latency_reachable(self) -> None:
        planner = self._latency_planner(_unscored(self.graph.groups))
        planner.run(0.0)  # as far as the floors allow
        if planner.predicted() > (1 - self.cfg.ratio) * self.lat0:
            raise impossible_latency(
                self.cfg.ratio, self.table, self.lat0, planner, self._fixed_layers(planner)
            )

    def _fixed_layers(self, planner: LatencyPlanner) -> list[tuple[str, float]]:
        touched = {s.layer for st in planner.states for s in st.slices}
        fixed = [(n, ms) for n, ms in planner.layer_ms.items() if n not in touched]
        return sorted(fixed, key=lambda x: -x[1])

    def _latency_plan(self, scores: dict[int, GroupScores], ratio: float) -> tuple[Plan, float]:
        """Plan to the target; where a `measure` callback is given, build each plan, measure it,
        add it to the table's anchors (recalibrating the predicted savings) and plan again, until
        a plan measures within LATENCY_TOLERANCE of the target or the rounds run out."""
        target = (1 - ratio) * self.lat0
        rounds = self.cfg.latency_rounds if self.measure is not None else 0
        for r in range(rounds + 1):
            planner = self._latency_planner(scores)
            keeps = planner.run(target)
            predicted = planner.predicted()
            if predicted > target * (1 + 1e-9):
                floor = self._latency_planner(scores)
                floor.run(0.0)  # as far as floors and the safe rule allow
                raise impossible_latency(
                    ratio, self.table, self.lat0, floor, self._fixed_layers(planner)
                )
            masks, blocks = planner.masks(keeps), planner.removed_blocks
            if r == rounds:
                break
            candidate = self._candidate(masks, list(blocks))
            measured = float(self.measure(candidate))
            widths = _conv_widths(candidate, self.table)
            self.calibration.append(
                {
                    "round": r + 1,
                    "predicted_ms": round(predicted, 4),
                    "measured_ms": round(measured, 4),
                }
            )
            self.table.add_anchor(Anchor(f"plan{len(self.calibration)}", measured, widths))
            if measured <= target * (1 + LATENCY_TOLERANCE):
                break
        params, macs = self.cost.evaluate(masks)
        self.importance_lost = planner.lost()
        return Plan(masks, params, macs, -1, dict(blocks)), predicted

    def _candidate(self, masks: dict[int, torch.Tensor], blocks: list[str]) -> nn.Module:
        """A pruned copy of the model for measuring a plan (the model itself stays as it is)."""
        model = copy.deepcopy(self.model)
        graph = PruneGraph(model, self.example, self.protected, self.cfg.protect_outputs)
        if [g.root for g in graph.groups] != [g.root for g in self.graph.groups]:
            raise PruningGraphError("the model's copy traced to other channel groups")
        for g in graph.groups:
            mask = masks.get(g.index)
            if mask is not None and bool(mask.any()):
                graph.execute(g, mask.nonzero().view(-1).tolist())
        return remove_blocks(model, blocks)

    def scores(self, step: int, timings: dict) -> tuple[dict[int, GroupScores], object]:
        stats = None
        t0 = time.perf_counter()
        if self.cfg.needs_gradients:
            keys = sorted({(s.module, s.kind) for g in self.graph.groups for s in g.slices})
            blocks = self.depth.modules(self.model) if self.depth is not None else None
            stats = calibrate(
                self.model,
                self.loss_fn,
                self.batches,
                self.graph.modules_in_groups(),
                keys,
                self.cfg.calib_batches,
                conflict=self.cfg.needs_conflict,
                progress=self.progress,
                blocks=blocks,
            )
        t1 = time.perf_counter()
        cfg = self.cfg
        if cfg.iterative_steps > 1 and cfg.importance == "random":
            cfg = replace(cfg, seed=cfg.seed + step)
        ctx = ImportanceContext(cfg, self.graph.modules_in_groups(), stats)
        imp = build_importance(ctx)
        scores = {g.index: imp(g) for g in self.graph.groups}
        if self.depth is not None:
            self.depth.score(ctx, self.graph.groups)
        timings.update(calibrate=t1 - t0, score=time.perf_counter() - t1)
        return scores, stats

    def step(self, k: int) -> None:
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        if k > 1:
            self.graph, self.cost = self._build()
        timings["graph"] = time.perf_counter() - t0
        scores, stats = self.scores(k, timings)
        t1 = time.perf_counter()
        ratio = self.cfg.ratio * k / self.cfg.iterative_steps
        predicted_ms, self.importance_lost = None, None
        if self.table is not None:
            plan, predicted_ms = self._latency_plan(scores, ratio)
        else:
            plan = self._plan(scores, ratio)
        t2 = time.perf_counter()
        removed = self._execute(plan)
        self._check_runs()
        t3 = time.perf_counter()
        timings.update(plan=t2 - t1, execute=t3 - t2)
        params = sum(p.numel() for p in self.model.parameters())
        macs = count_cost(self.model, self.hw, in_channels=self.example.shape[1]).macs
        self.steps.append(
            StepReport(
                step=k,
                target_ratio=ratio,
                params=params,
                macs=macs,
                predicted_params=plan.params,
                groups_pruned=len(plan.masks),
                channels_removed=removed,
                blocks_removed=len(plan.blocks),
                calib_batches=stats.batches if stats else 0,
                tasks=list(stats.tasks) if stats else [],
                mean_losses=stats.mean_losses if stats else {},
                seconds=round(time.perf_counter() - t0, 3),
                timings={key: round(v, 3) for key, v in timings.items()},
                predicted_ms=None if predicted_ms is None else round(predicted_ms, 4),
                importance_lost=_rounded(self.importance_lost),
            )
        )

    def _plan(self, scores: dict[int, GroupScores], ratio: float) -> Plan:
        base = self.params0 if self.cfg.target == "params" else self.macs0
        c = self.cfg
        planner = Planner(
            self.graph.groups, scores, self.cost, self.round_to, c.min_width, c.max_group_ratio
        )
        plan = planner.search(int((1 - ratio) * base), self.cfg.target)
        if plan is None:
            best = planner.plan_at(planner.n_candidates)
            reached = best.params if self.cfg.target == "params" else best.macs
            raise _impossible(
                self.cfg,
                1 - reached / base,
                f"with the safe rule (top {self.cfg.safe_top_q:.0%} per task kept),",
            )
        return plan

    def _execute(self, plan) -> int:
        removed = 0
        for g in self.graph.groups:
            channels = plan.channels(g.index)
            if channels:
                self.tracker.apply(self.graph.execute(g, channels))
                removed += len(channels)
        if plan.blocks and self.depth is not None:
            self.depth.execute(self.model, list(plan.blocks), self.tracker, plan.blocks)
        return removed

    def _check_runs(self) -> None:
        was = self.model.training
        try:
            self.model.eval()
            with torch.no_grad():
                self.model(self.example)
        except RuntimeError as e:
            raise PruningGraphError(
                f"the pruned model no longer runs ({str(e).splitlines()[0]}); a layer's channel "
                "coupling was not traced correctly: protect it (protected=...) and retry"
            ) from None
        finally:
            self.model.train(was)


def _rounded(x: float | None) -> float | None:
    return None if x is None else round(x, 6)


def _widths_table(model: nn.Module, before: dict[str, tuple[int, int]]) -> list[dict]:
    rows = []
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.conv._ConvNd | nn.Linear) and name in before:
            after = m.out_channels if isinstance(m, nn.modules.conv._ConvNd) else m.out_features
            rows.append(
                {"layer": name, "type": type(m).__name__, "before": before[name][0], "after": after}
            )
    return rows


def prune(
    model: nn.Module,
    loss_fn: LossFn | None,
    batches: Iterable,
    cfg: PruneConfig | None = None,
    example_inputs: torch.Tensor | None = None,
    protected: Sequence[str] = (),
    finetune: FinetuneFn | None = None,
    progress: bool = True,
    latency_table: LatencyTable | None = None,
    measure: MeasureFn | None = None,
    blocks: Sequence[str] = (),
) -> PruneResult:
    """Prune `model` in place (deep-copy it first to keep the original).

    model: any nn.Module whose forward(images) returns a dict (or tuple) of task outputs.
    loss_fn: (outputs, batch) -> {task: scalar loss}; may be None for random / l1.
    batches: calibration batches (dicts with 'images', or tensors); re-iterable for K > 1 steps.
    protected: module names whose output channels never change (added to cfg.protected).
    finetune: called as finetune(model, step) between iterative steps.
    latency_table: for cfg.target == "latency", the table to plan against (else the file named
        by cfg.latency_table); the ratio is then a fraction of the predicted latency.
    measure: measure(pruned_copy) -> ms on the table's backend and scale: lets the latency
        planner check its plans against real measurements (cfg.latency_rounds times at most).
    blocks: removable residual blocks (the spec's `removable_blocks`; `*` = one path segment),
        candidates beside the channels when cfg.depth; cfg.depth without any is an error.
    """
    cfg = cfg or PruneConfig()
    t0 = time.perf_counter()
    if cfg.depth and not blocks:
        raise no_blocks_error(model)  # one line, before any tracing or calibration
    if cfg.needs_gradients and loss_fn is None:
        raise CalibrationError(f"importance {cfg.importance!r} needs a per-task loss_fn; got None")
    table = _resolve_table(cfg, latency_table)
    session = _Session(
        model,
        loss_fn,
        batches,
        cfg,
        _example_input(example_inputs, batches),
        protected,
        progress,
        table,
        measure,
        blocks,
    )
    session.check_reachable()
    for k in range(1, cfg.iterative_steps + 1):
        session.step(k)
        if finetune is not None and k < cfg.iterative_steps:
            finetune(model, k)
    return _finish(session, time.perf_counter() - t0)


def _finish(session: _Session, seconds: float) -> PruneResult:
    cfg, model = session.cfg, session.model
    last = session.steps[-1]
    report = PruneReport(
        importance=cfg.importance,
        target=cfg.target,
        target_ratio=cfg.ratio,
        params_before=session.params0,
        params_after=last.params,
        macs_before=session.macs0,
        macs_after=last.macs,
        flops_input_hw=list(session.hw),
        widths=_widths_table(model, session.before_widths),
        frozen=[asdict(f) for f in session.graph.frozen],
        steps=session.steps,
        groups_total=len(session.graph.groups),
        seconds=round(seconds, 3),
        latency=_latency_summary(session),
        round_to={
            "value": session.round_to,
            "setting": session.round_to_setting,
            "source": session.round_to_source,
        },
        depth=session.depth.report() if session.depth is not None else None,
    )
    record = {
        "format": RECORD_FORMAT,
        "version": RECORD_VERSION,
        "config": cfg.to_dict(),
        "protected": list(session.protected),
        "params": [session.params0, last.params],
        "macs": [session.macs0, last.macs],
        "flops_input_hw": list(session.hw),
        "achieved_ratio": round(report.achieved_ratio, 6),
        "layers": session.tracker.to_record(session.before_widths),
    }
    if session.depth is not None:
        record["removed_blocks"] = list(session.depth.removed)
    return PruneResult(model, record, report)


def group_scores(
    model: nn.Module,
    loss_fn: LossFn | None,
    batches: Iterable,
    cfg: PruneConfig,
    example_inputs: torch.Tensor | None = None,
    protected: Sequence[str] = (),
) -> tuple[list[ChannelGroup], dict]:
    """Scores without pruning (for inspection, tests and plots)."""
    session = _Session(
        model,
        loss_fn,
        batches,
        cfg,
        _example_input(example_inputs, batches),
        protected,
        progress=False,
    )
    scores, _ = session.scores(1, {})
    return session.graph.groups, scores


def _round_to_of(cfg: PruneConfig, table: LatencyTable | None) -> tuple[int, str]:
    if table is None:
        return resolve_round_to(cfg.round_to, None, None)
    return round_to_for_table(cfg.round_to, table)


def round_to_for_table(setting: int | str | None, table: LatencyTable) -> tuple[int, str]:
    """A round_to setting resolved against the table's channel block (resolve_round_to); a
    table probed on a grid the plan's widths fall between is refused (check_grid)."""
    origin = f"the {table.key.backend} latency table ({table.key.device})"
    grid = table.meta.get("grid") or {}
    value, source = resolve_round_to(
        setting, table.meta.get("channel_block"), origin, grid.get("round_to")
    )
    check_grid(table, value)
    return value, source


def _resolve_table(cfg: PruneConfig, table: LatencyTable | None) -> LatencyTable | None:
    if cfg.target != "latency":
        return None
    if table is not None:
        return table
    if cfg.latency_table:
        return load_table(cfg.latency_table)
    raise PruneConfigError(
        "target 'latency' needs a latency table: pass latency_table= (a LatencyTable), set "
        "PruneConfig.latency_table to a file from mtc-latency, or use mtc-compress, which "
        "measures one on ONNX Runtime CPU"
    )


def _conv_widths(model: nn.Module, table: LatencyTable) -> dict[str, tuple[int, int]]:
    """(c_in, c_out) of every table layer; (0, 0) for a layer gone with its removed block."""
    mods = dict(model.named_modules())
    return {
        n: (int(mods[n].in_channels), int(mods[n].out_channels)) if n in mods else (0, 0)
        for n in table.layers
    }


def check_table_fits(table: LatencyTable, model: nn.Module, in_channels: int = 3) -> None:
    """The table must describe this very architecture at its input size and batch."""
    from compressor.latency.probes import fingerprint, probed_layers

    layers = probed_layers(model, table.key.input_hw, in_channels)
    missing = [n for n in table.layers if n not in layers]
    if missing:
        raise LatencyTableMismatchError(
            f"latency table names layer {missing[0]!r}, which does not run in this model "
            f"({len(missing)} such layers): the table belongs to another model"
        )
    table.check_layers({n: (layers[n].cin, layers[n].cout) for n in table.layers})
    used = {n: layers[n] for n in table.layers}
    if fingerprint(used, table.key.input_hw, table.key.batch) != table.key.model:
        raise LatencyTableMismatchError(
            "latency table was measured for another architecture (kernel, stride or feature-map "
            f"sizes differ at input {table.key.input_hw[0]}x{table.key.input_hw[1]}); export "
            "probes of this model (mtc-probes) and measure them"
        )


def _latency_summary(session: _Session) -> dict | None:
    table = session.table
    if table is None:
        return None
    before = {n: (ly.cin, ly.cout) for n, ly in table.layers.items()}
    after = _conv_widths(session.model, table)
    rows = []
    for n in table.layers:
        b, a = before[n], after.get(n, before[n])
        mb, ma = table.layer_ms(n, *b), table.layer_ms(n, *a)
        if b != a:
            rows.append(
                {
                    "layer": n,
                    "before": list(b),
                    "after": list(a),
                    "ms_before": round(mb, 4),
                    "ms_after": round(ma, 4),
                    "saved_ms": round(mb - ma, 4),
                }
            )
    rows.sort(key=lambda r: -r["saved_ms"])
    return {
        "key": table.key.to_dict(),
        "predicted_before_ms": round(session.lat0, 4),
        "predicted_after_ms": round(table.predict(after), 4),
        "fit": {
            "fixed_ms": round(table.fixed_ms, 4),
            "per_volume_ms": table.per_volume_ms,
            "savings_scale": round(table.savings_scale, 6),
            "anchors": [{"name": a.name, "ms": round(a.ms, 4)} for a in table.anchors],
        },
        "calibration": session.calibration,
        "grid": table.meta.get("grid"),
        "channel_block": table.meta.get("channel_block"),
        "round_to": session.round_to,
        "top_savings": rows,
    }
