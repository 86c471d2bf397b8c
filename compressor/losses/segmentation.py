"""A per-task segmentation loss for segmentation-only models: focal + (focal) Tversky.

Each task's logits [B, C, H, W] meet its integer label map [B, H, W] (the data set's
`batch[task]`). Focal: a sigmoid focal term per class channel against "pixel is this class",
summed over the classes. Tversky: `tversky_loss` per class on the softmax probabilities,
averaged over the classes and raised to `tversky_gamma` (> 1 keeps the gradient alive as the
overlap gets good). Only tasks present in the outputs are computed, so the same object serves
a model that predicts a subset of the configured tasks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from compressor.losses.errors import LossConfigError, LossInputError, check_non_negative
from compressor.losses.yolop import tversky_loss
from runtime.spec import TASK_DRIVABLE, TASK_LANE


@dataclass(frozen=True)
class SegTaskLoss:
    """Weights of one task's loss. tversky_alpha weighs false positives, tversky_beta misses
    (as in `tversky_loss`); focal_alpha weighs the positive pixels of each class channel."""

    weight: float = 1.0
    focal_gain: float = 1.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    tversky_gain: float = 1.0
    tversky_alpha: float = 0.5
    tversky_beta: float = 0.5
    tversky_gamma: float = 1.0

    def __post_init__(self) -> None:
        check_non_negative(self, "segmentation loss option")
        if self.focal_alpha > 1:
            raise LossConfigError(f"focal_alpha={self.focal_alpha} must be in [0, 1]")


# TwinLiteNet's training loss (its loss.py at the released checkpoint): focal alpha 0.25,
# gamma 2 on both tasks; Tversky (FP 0.7, miss 0.3) on drivable and (0.9, 0.1) on lane, both
# with exponent 4/3.
TWINLITE_LOSS: Mapping[str, SegTaskLoss] = {
    TASK_DRIVABLE: SegTaskLoss(tversky_alpha=0.7, tversky_beta=0.3, tversky_gamma=4.0 / 3.0),
    TASK_LANE: SegTaskLoss(tversky_alpha=0.9, tversky_beta=0.1, tversky_gamma=4.0 / 3.0),
}


@dataclass(frozen=True)
class TwinLiteLossConfig:
    """TwinLiteNet's loss options (its model spec's): the weight of each task's focal +
    Tversky loss (the official training weighs both 1)."""

    drivable_weight: float = 1.0
    lane_weight: float = 1.0

    def __post_init__(self) -> None:
        check_non_negative(self)

    def tasks(self) -> dict[str, SegTaskLoss]:
        """TWINLITE_LOSS with these task weights."""
        weights = {TASK_DRIVABLE: self.drivable_weight, TASK_LANE: self.lane_weight}
        return {t: replace(cfg, weight=weights[t]) for t, cfg in TWINLITE_LOSS.items()}


def focal_loss(logits: torch.Tensor, onehot: torch.Tensor, alpha: float, gamma: float):
    """Sigmoid focal loss, mean over pixels, summed over the class channels."""
    bce = F.binary_cross_entropy_with_logits(logits, onehot, reduction="none")
    p_true = torch.exp(-bce)
    weight = alpha * onehot + (1.0 - alpha) * (1.0 - onehot)
    return (weight * (1.0 - p_true).pow(gamma) * bce).mean((0, 2, 3)).sum()


class SegmentationLoss:
    """`(outputs, batch) -> {task: scalar}` for the configured segmentation tasks present in
    `outputs` (weights applied). `components` holds the last call's unweighted parts."""

    def __init__(self, tasks: Mapping[str, SegTaskLoss]):
        if not tasks:
            raise LossConfigError("SegmentationLoss needs at least one task, got none")
        self.tasks = dict(tasks)
        self._parts: dict[str, torch.Tensor] = {}

    @property
    def components(self) -> dict[str, float]:
        return {k: float(v) for k, v in self._parts.items()}

    def __call__(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        self._parts = {}
        losses = {}
        for task, cfg in self.tasks.items():
            if task not in outputs:
                continue
            if task not in batch:
                raise LossInputError(
                    f"the model predicts {task!r} but the batch has no {task!r} labels; "
                    f"batch keys: {sorted(batch)}"
                )
            losses[task] = cfg.weight * self._task(task, cfg, outputs[task], batch[task])
        return losses

    def _task(self, task: str, cfg: SegTaskLoss, logits: torch.Tensor, target: torch.Tensor):
        if logits.ndim != 4 or target.ndim != 3 or logits.shape[-2:] != target.shape[-2:]:
            raise LossInputError(
                f"{task} logits {list(logits.shape)} and labels {list(target.shape)} do not "
                "match; expected logits [B, C, H, W] and labels [B, H, W] of the same H, W"
            )
        logits = logits.float()
        n_cls = logits.shape[1]
        target = target.to(logits.device).long()
        onehot = F.one_hot(target, n_cls).permute(0, 3, 1, 2).float()
        focal = focal_loss(logits, onehot, cfg.focal_alpha, cfg.focal_gamma)
        prob = logits.softmax(1)
        per_class = [
            tversky_loss(prob[:, c], onehot[:, c], cfg.tversky_alpha, cfg.tversky_beta)
            for c in range(n_cls)
        ]
        tv = torch.stack(per_class).mean().clamp_min(0).pow(cfg.tversky_gamma)
        self._parts.update({f"{task}_focal": focal.detach(), f"{task}_tversky": tv.detach()})
        return cfg.focal_gain * focal + cfg.tversky_gain * tv
