"""The YOLOP multi-task loss, returned per task (never only the sum).

Per-task losses are what task-aware pruning (per-task Taylor importance, gradient conflict) and
the training logs need, so the callable returns `{det, drivable, lane}` with the weights already
applied; `total_loss` sums them. Tasks missing from the model outputs are skipped, so a seg-only
model trains with the same object.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from compressor.losses.detection import assign_targets, level_losses
from compressor.losses.errors import LossConfigError, LossInputError, check_non_negative
from runtime.spec import TASK_DET, TASK_DRIVABLE, TASK_LANE


@dataclass(frozen=True)
class YolopLossConfig:
    """Every weight of YOLOP's multi-task loss (its model spec's loss options). Defaults follow
    YOLOP's gains (box 0.05, obj 1.0, cls 0.5, seg 0.2) with level balance 4/1/0.4 (small
    objects live on the fine level)."""

    det_weight: float = 1.0
    drivable_weight: float = 1.0
    lane_weight: float = 1.0
    box_gain: float = 0.05
    obj_gain: float = 1.0
    cls_gain: float = 0.5
    level_balance: tuple[float, ...] = (4.0, 1.0, 0.4)
    anchor_threshold: float = 4.0
    drivable_gain: float = 0.2
    lane_bce_gain: float = 0.2
    lane_tversky_gain: float = 0.2
    lane_pos_weight: float = 1.0
    tversky_alpha: float = 0.5
    tversky_beta: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "level_balance", tuple(float(b) for b in self.level_balance))
        check_non_negative(self)
        if self.anchor_threshold <= 1.0:
            raise LossConfigError(
                f"anchor_threshold={self.anchor_threshold} must be > 1 (a max side ratio); "
                "YOLOP uses 4.0"
            )


def total_loss(per_task: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum of weighted per-task losses (the one scalar that is back-propagated)."""
    if not per_task:
        raise LossInputError("no task losses to sum: the model produced none of the known tasks")
    return torch.stack([v.reshape(()) for v in per_task.values()]).sum()


def tversky_loss(
    prob: torch.Tensor, target: torch.Tensor, alpha: float, beta: float
) -> torch.Tensor:
    """1 - Tversky index over the whole batch. alpha weighs false positives, beta misses;
    alpha = beta = 0.5 is Dice, 1/1 is IoU. Thin lanes are a tiny fraction of the pixels, so a
    region term keeps BCE from settling on 'no lane anywhere'."""
    tp = (prob * target).sum()
    fp = (prob * (1 - target)).sum()
    fn = ((1 - prob) * target).sum()
    return 1.0 - (tp + 1.0) / (tp + alpha * fp + beta * fn + 1.0)


class YolopLoss:
    """`(outputs, batch) -> {det, drivable, lane}` scalar tensors (weights applied).

    `components` holds the unweighted parts of the last call (floats) for logging; they are
    kept as detached tensors until read so a GPU step does not sync for logging.
    """

    def __init__(
        self,
        anchors_px: torch.Tensor,
        strides: tuple[int, ...],
        cfg: YolopLossConfig = YolopLossConfig(),
    ) -> None:
        anchors_px = torch.as_tensor(anchors_px, dtype=torch.float32)
        if anchors_px.ndim != 3 or anchors_px.shape[-1] != 2 or anchors_px.shape[0] != len(strides):
            raise LossInputError(
                f"anchors_px must be [levels, anchors, 2] with one level per stride; got "
                f"{list(anchors_px.shape)} for strides {tuple(strides)}"
            )
        if len(cfg.level_balance) != len(strides):
            raise LossConfigError(
                f"level_balance has {len(cfg.level_balance)} values for {len(strides)} "
                "detection levels; give one per level"
            )
        self.anchors_px = anchors_px.detach().clone()
        self.strides = tuple(int(s) for s in strides)
        self.cfg = cfg
        self._parts: dict[str, torch.Tensor] = {}

    @property
    def components(self) -> dict[str, float]:
        return {k: float(v) for k, v in self._parts.items()}

    @classmethod
    def for_model(
        cls, model: torch.nn.Module, cfg: YolopLossConfig = YolopLossConfig()
    ) -> YolopLoss:
        """Build from a model exposing `det_anchors`/`det_strides` (built-in or pruned YOLOP)."""
        return cls(model.det_anchors.detach().cpu(), tuple(model.det_strides), cfg)

    def __call__(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        losses: dict[str, torch.Tensor] = {}
        self._parts = {}
        if TASK_DET in outputs:
            losses[TASK_DET] = self.cfg.det_weight * self._det(outputs[TASK_DET], batch["targets"])
        if TASK_DRIVABLE in outputs:
            losses[TASK_DRIVABLE] = self.cfg.drivable_weight * self._drivable(
                outputs[TASK_DRIVABLE], batch[TASK_DRIVABLE]
            )
        if TASK_LANE in outputs:
            losses[TASK_LANE] = self.cfg.lane_weight * self._lane(
                outputs[TASK_LANE], batch[TASK_LANE]
            )
        return losses

    def _det(self, raw: list[torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        if not isinstance(raw, list | tuple) or len(raw) != len(self.strides):
            raise LossInputError(
                f"det output must be a list of {len(self.strides)} raw level tensors (training "
                f"mode); got {type(raw).__name__}. Call model.train() (or freeze_bn) first"
            )
        targets = targets.to(raw[0].device)
        box = obj = cls = raw[0].sum() * 0.0
        for i, p in enumerate(raw):
            tg = assign_targets(
                targets,
                self.anchors_px[i],
                self.strides[i],
                (p.shape[2], p.shape[3]),
                self.cfg.anchor_threshold,
            )
            lbox, lobj, lcls = level_losses(p.float(), tg, p.shape[-1] - 5)
            box, obj, cls = box + lbox, obj + lobj * self.cfg.level_balance[i], cls + lcls
        self._parts.update(det_box=box.detach(), det_obj=obj.detach(), det_cls=cls.detach())
        return self.cfg.box_gain * box + self.cfg.obj_gain * obj + self.cfg.cls_gain * cls

    @staticmethod
    def _check_seg(logits: torch.Tensor, target: torch.Tensor, task: str) -> None:
        if logits.ndim != 4 or logits.shape[1] != 2 or logits.shape[-2:] != target.shape[-2:]:
            raise LossInputError(
                f"{task} logits {list(logits.shape)} and labels {list(target.shape)} do not "
                "match; expected logits [B, 2, H, W] and labels [B, H, W] of the same H, W"
            )

    def _drivable(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self._check_seg(logits, target, TASK_DRIVABLE)
        onehot = F.one_hot(target.to(logits.device).long(), 2).permute(0, 3, 1, 2).float()
        bce = F.binary_cross_entropy_with_logits(logits.float(), onehot)
        self._parts["drivable_bce"] = bce.detach()
        return self.cfg.drivable_gain * bce

    def _lane(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self._check_seg(logits, target, TASK_LANE)
        logits = logits.float()
        target = target.to(logits.device).long()
        onehot = F.one_hot(target, 2).permute(0, 3, 1, 2).float()
        pos_weight = torch.tensor([1.0, self.cfg.lane_pos_weight], device=logits.device)
        bce = F.binary_cross_entropy_with_logits(
            logits, onehot, pos_weight=pos_weight.view(1, 2, 1, 1)
        )
        prob = logits.softmax(1)[:, 1]  # softmax: argmax == (prob > 0.5), same as the mask
        tv = tversky_loss(prob, onehot[:, 1], self.cfg.tversky_alpha, self.cfg.tversky_beta)
        self._parts.update(lane_bce=bce.detach(), lane_tversky=tv.detach())
        return self.cfg.lane_bce_gain * bce + self.cfg.lane_tversky_gain * tv
