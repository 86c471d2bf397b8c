"""PruneConfig: every choice of the pruning method, including each *(ours)* option of METHOD.md,
so the ablation is a matter of config. Validated on construction: a bad value fails before any
model is traced or any batch is read."""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass

from compressor.pruning.errors import PruneConfigError
from runtime.spec import DEFAULT_INPUT_HW

NORMALIZERS = ("mean", "max", "l2")
AGGREGATES = ("max", "mean", "sum", "weighted")
CONFLICT_MODES = ("multiplicative", "additive")
RESCALES = ("aggregate", "score", "none")
TARGETS = ("params", "flops", "latency")
ROUND_TO_AUTO = "auto"
DEFAULT_ROUND_TO = 8  # a table that records no channel block, or a target without a table


def _registry():
    """The importance registry (`importance` imports this module, so it is imported here)."""
    from compressor.pruning import importance

    return importance


def _choice(value: str, valid: tuple[str, ...], field: str) -> None:
    if value not in valid:
        close = difflib.get_close_matches(str(value), valid, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise PruneConfigError(f"{field} {value!r} is not one of {', '.join(valid)}{hint}")


@dataclass(frozen=True)
class PruneConfig:
    """Task-aware safe pruning settings (defaults = METHOD.md's spec).

    ratio: fraction of the target quantity to remove, in (0, 1): params, FLOPs, or the latency
        the latency table predicts for the unpruned model (target="latency").
    importance: a registered importance (list_importances(): random | l1 | taylor_sum | tci |
        tci_gcp built in, plus any added with register_importance).
    normalize: per-task normalisation within a group (mean | max | l2).
    aggregate: how per-task importances combine (max | mean | sum | weighted with task_weights).
    conflict_lambda / conflict_mode: S = I * (1 - lambda C) (multiplicative) or I - lambda C.
    group_rescale: aggregate | score | none — how tci/tci_gcp scores are made comparable across
        groups before the global ranking (see importance.rescale).
    safe_top_q: a channel in the top q of any task's normalised importance within its group is
        never pruned (tci, tci_gcp); 0 disables.
    round_to / min_width: every pruned width is a multiple of round_to and >= min_width.
        round_to None (the default) = the latency table's channel block where it records one
        (16 on AVX-512 ONNX Runtime, 8 on AVX2), else the step of the grid it was probed on,
        else 8; "auto" = the table's block, and an error when it records none; an integer is
        used as it is (resolve_round_to).
    max_group_ratio: the largest fraction of any one channel group a plan may remove (1 = no
        cap). A cap spreads a cut over more layers instead of gutting the few where the target
        is cheapest (for latency: the high-resolution decoder convs).
    protected: extra module names never pruned (their output channels stay); protect_outputs also
        freezes every layer whose output channels reach a model output (prediction convs).
    iterative_steps: 1 = one-shot; K = K prune steps (re-calibrating each time) with the caller's
        fine-tune callback in between.
    flops_input_hw: (H, W) FLOPs are counted at; None = the example input's size.
    latency_table: a table file from mtc-latency for target="latency" (None: the caller passes a
        LatencyTable to prune(), or mtc-compress measures one on ONNX Runtime CPU).
    depth: also remove whole residual blocks (the model spec's `removable_blocks`): each block
        is scored per task by the Taylor estimate of removing its residual branch (plus the
        conflict penalty), priced from the latency table, and planned in the same knapsack as
        the channel steps; needs target="latency" and a gradient importance.
    latency_rounds: with a measure callback (the backend is on this machine), how many proposed
        plans are built and measured to recalibrate the latency model before the final plan.
    """

    ratio: float = 0.4
    target: str = "params"
    importance: str = "tci_gcp"
    calib_batches: int = 32
    normalize: str = "mean"
    aggregate: str = "max"
    task_weights: tuple[tuple[str, float], ...] = ()
    conflict_lambda: float = 0.5
    conflict_mode: str = "multiplicative"
    group_rescale: str = "aggregate"
    safe_top_q: float = 0.1
    round_to: int | str | None = None
    min_width: int = 8
    max_group_ratio: float = 1.0
    protected: tuple[str, ...] = ()
    protect_outputs: bool = True
    iterative_steps: int = 1
    flops_input_hw: tuple[int, int] | None = DEFAULT_INPUT_HW
    latency_table: str | None = None
    latency_rounds: int = 2
    depth: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "protected", tuple(self.protected))
        object.__setattr__(self, "task_weights", tuple(tuple(p) for p in self.task_weights))
        self._validate_numbers()
        _registry().importance_entry(self.importance)  # unknown: lists the registered
        _choice(self.normalize, NORMALIZERS, "normalize")
        _choice(self.aggregate, AGGREGATES, "aggregate")
        _choice(self.conflict_mode, CONFLICT_MODES, "conflict_mode")
        _choice(self.group_rescale, RESCALES, "group_rescale")
        _choice(self.target, TARGETS, "target")
        if self.aggregate == "weighted" and not self.task_weights:
            raise PruneConfigError(
                "aggregate='weighted' needs task_weights, e.g. (('det', 2.0), ('lane', 1.0)); "
                "got none"
            )
        if any(w < 0 for _, w in self.task_weights):
            raise PruneConfigError(f"task_weights must be >= 0, got {dict(self.task_weights)}")
        if self.depth:
            self._validate_depth()

    def _validate_depth(self) -> None:
        if self.target != "latency":
            raise PruneConfigError(
                f"depth pruning weighs blocks against channels by the latency each saves, so it "
                f"needs target 'latency'; got target {self.target!r} (use --target latency, or "
                "drop --depth)"
            )
        if not self.needs_gradients:
            raise PruneConfigError(
                f"depth pruning scores a block by the Taylor estimate of removing it, which needs "
                f"gradients; importance {self.importance!r} computes none (use tci_gcp, tci or "
                "taylor_sum, or drop --depth)"
            )

    def _validate_numbers(self) -> None:
        if not 0.0 < self.ratio < 1.0:
            raise PruneConfigError(
                f"ratio must be in (0, 1) (the fraction of {self.target} to remove), got "
                f"{self.ratio}; e.g. 0.4 removes 40%"
            )
        checks = [
            (self.calib_batches >= 1, f"calib_batches must be >= 1, got {self.calib_batches}"),
            (round_to_ok(self.round_to), f"round_to must be >= 1 or 'auto', got {self.round_to!r}"),
            (self.min_width >= 1, f"min_width must be >= 1, got {self.min_width}"),
            (
                0.0 < self.max_group_ratio <= 1.0,
                f"max_group_ratio must be in (0, 1], got {self.max_group_ratio}",
            ),
            (
                self.iterative_steps >= 1,
                f"iterative_steps must be >= 1, got {self.iterative_steps}",
            ),
            (self.latency_rounds >= 0, f"latency_rounds must be >= 0, got {self.latency_rounds}"),
            (0.0 <= self.safe_top_q < 1.0, f"safe_top_q must be in [0, 1), got {self.safe_top_q}"),
            (
                self.conflict_lambda >= 0,
                f"conflict_lambda must be >= 0, got {self.conflict_lambda}",
            ),
        ]
        for ok, msg in checks:
            if not ok:
                raise PruneConfigError(msg)
        hw = self.flops_input_hw
        if hw is not None and (len(hw) != 2 or min(hw) <= 0):
            raise PruneConfigError(f"flops_input_hw must be (H, W) > 0 or None, got {hw}")

    @property
    def task_aware(self) -> bool:
        """Importances that score each task separately (and so apply the safe rule)."""
        return _registry().importance_entry(self.importance).task_aware

    @property
    def needs_gradients(self) -> bool:
        return _registry().importance_entry(self.importance).needs_gradients

    @property
    def needs_conflict(self) -> bool:
        """Calibration also collects per-task gradient dot products (the conflict term)."""
        return _registry().importance_entry(self.importance).conflict

    def to_dict(self) -> dict:
        d = asdict(self)
        d["task_weights"] = dict(self.task_weights)
        d["protected"] = list(self.protected)
        d["flops_input_hw"] = list(self.flops_input_hw) if self.flops_input_hw else None
        return d


def round_to_ok(value: object) -> bool:
    """A valid PruneConfig.round_to: None, 'auto' or an integer >= 1."""
    if value is None or value == ROUND_TO_AUTO:
        return True
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def resolve_round_to(
    setting: int | str | None,
    channel_block: object,
    origin: str | None,
    grid_step: object = None,
) -> tuple[int, str]:
    """(round_to, where it came from) for a PruneConfig.round_to setting, given the channel block
    the latency table records (`origin` names the table; None: no table) and the step of the
    grid it was probed on. An integer wins; the default takes the block, else the table's grid
    step, else 8; "auto" takes the block and refuses a table without one, because the user asked
    for the backend's block and would otherwise plan on a guess."""
    if isinstance(setting, int):
        return setting, "given"
    if isinstance(channel_block, int) and channel_block > 1:
        return channel_block, f"auto: the channel block of {origin}"
    if channel_block == 1:  # measured: this backend's latency shows no channel steps
        return DEFAULT_ROUND_TO, f"auto: {origin} shows no channel steps; {DEFAULT_ROUND_TO}"
    if setting == ROUND_TO_AUTO:
        where = (
            f"{origin} records none (its backend's block is unknown)"
            if origin
            else "there is no latency table for a params / FLOPs target"
        )
        raise PruneConfigError(
            f"round_to 'auto' takes the channel block a latency table records, but {where}; "
            f"give a number instead, e.g. --round-to {DEFAULT_ROUND_TO}"
        )
    if isinstance(grid_step, int) and grid_step > 1:
        return grid_step, f"default: {origin} records no channel block; its probe grid's step"
    why = f"{origin} records no channel block" if origin else "no latency table"
    return DEFAULT_ROUND_TO, f"default {DEFAULT_ROUND_TO}: {why}"
