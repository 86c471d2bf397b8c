"""Segmentation metrics of the evaluation protocol (drivable area, lane lines) from confusion
matrices.

Two modes, the same stored state (one confusion matrix per update):
- `global` (ours, default): every metric from the one confusion matrix summed over the data set,
  so each pixel weighs the same;
- `per_batch` (YOLOP's): every metric per update (YOLOP: per batch), then the mean over updates
  weighted by the batch size (YOLOP's AverageMeter), so a batch without lane pixels counts as
  IoU 0 and small batches weigh as much per image as large ones.

Conventions (both modes, as YOLOP's SegmentationMetric): rows are ground truth, columns are
predictions; ground-truth labels outside [0, C) are ignored (e.g. 255); a class whose union is
empty has IoU 0 and one without ground-truth pixels has recall 0; mIoU is the mean over all C
classes. YOLOP's lane "accuracy" is the recall of the lane class: reported as `recall`, with
`yolop_accuracy` as an alias; `balanced_accuracy` is the mean per-class recall.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from runtime.geometry import Letterbox, crop_padding
from runtime.metrics.errors import MetricsInputError, resolve_mode


def confusion_matrix(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts, rows = gt class, columns = predicted class."""
    return _counts(*_labels(pred, gt, num_classes), num_classes)


def _counts(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> np.ndarray:
    if gt.size and (gt.min() < 0 or gt.max() >= num_classes):
        keep = (gt >= 0) & (gt < num_classes)
        pred, gt = pred[keep], gt[keep]
    flat = gt.astype(np.int64).ravel() * num_classes + pred.astype(np.int64).ravel()
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def segmentation_scores(cm: np.ndarray) -> dict:
    """Pixel accuracy, per-class IoU/recall/precision, mIoU, balanced accuracy of one matrix;
    for two classes also the class-1 (lane / drivable) values under their own names."""
    cm = np.asarray(cm, dtype=np.float64)
    diag, gt_sum, pred_sum = np.diag(cm), cm.sum(axis=1), cm.sum(axis=0)
    iou = _ratio(diag, gt_sum + pred_sum - diag)
    recall, precision = _ratio(diag, gt_sum), _ratio(diag, pred_sum)
    total = cm.sum()
    out = {
        "pixel_accuracy": float(diag.sum() / total) if total else 0.0,
        "miou": float(iou.mean()),
        "balanced_accuracy": float(recall.mean()),
        "per_class_iou": iou.tolist(),
        "per_class_recall": recall.tolist(),
        "per_class_precision": precision.tolist(),
    }
    if cm.shape[0] == 2:
        out.update(iou=float(iou[1]), recall=float(recall[1]), precision=float(precision[1]))
        out["yolop_accuracy"] = out["recall"]
    return out


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.zeros_like(num, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


Batches = Sequence[tuple[np.ndarray, int]]


def _global(total: np.ndarray, batches: Batches) -> dict:
    return segmentation_scores(total)


def _per_batch(total: np.ndarray, batches: Batches) -> dict:
    weights = np.array([n for _, n in batches], dtype=np.float64)
    per = [segmentation_scores(cm) for cm, _ in batches]
    return {key: _weighted([p[key] for p in per], weights) for key in per[0]}


def _weighted(values: list, weights: np.ndarray) -> float | list:
    arr = np.asarray(values, dtype=np.float64)
    mean = np.tensordot(weights, arr, axes=1) / weights.sum()
    return mean.tolist() if arr.ndim > 1 else float(mean)


SEGMENTATION_MODES: dict[str, Callable[[np.ndarray, Batches], dict]] = {
    "global": _global,
    "per_batch": _per_batch,
}


class SegmentationEvaluator:
    """One `update` per batch of label maps (argmax of the logits, not the logits)."""

    def __init__(self, num_classes: int = 2, mode: str = "global") -> None:
        if int(num_classes) < 2:
            raise MetricsInputError(f"num_classes must be >= 2, got {num_classes}")
        self._reduce = resolve_mode(SEGMENTATION_MODES, mode, "segmentation")
        self.mode = mode
        self.num_classes = int(num_classes)
        self.reset()

    def reset(self) -> None:
        self.total = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        self._batches: list[tuple[np.ndarray, int]] = []

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """pred, gt: (B, H, W) or (H, W) integer class maps of the same shape."""
        p, g = _labels(pred, gt, self.num_classes)
        self._add(_counts(p, g, self.num_classes), 1 if p.ndim == 2 else p.shape[0])

    def update_letterboxed(
        self, pred: np.ndarray, gt: np.ndarray, letterbox: Letterbox | Sequence[Letterbox]
    ) -> None:
        """pred, gt at network resolution (B, out_h, out_w): the letterbox padding is cropped
        away first (YOLOP's protocol scores 640x360, not the padded 640x384). One Letterbox
        for the whole batch or one per image."""
        p, g = _labels(pred, gt, self.num_classes)
        p, g = (p[None], g[None]) if p.ndim == 2 else (p, g)
        boxes = [letterbox] * len(p) if isinstance(letterbox, Letterbox) else list(letterbox)
        if len(boxes) != len(p):
            raise MetricsInputError(f"got {len(boxes)} letterboxes for a batch of {len(p)}")
        cm = np.zeros_like(self.total)
        for pi, gi, lb in zip(p, g, boxes):
            if pi.shape != (lb.out_h, lb.out_w):
                raise MetricsInputError(
                    f"mask is {pi.shape[1]}x{pi.shape[0]}, letterbox output is {lb.out_w}x{lb.out_h}"
                )
            cm += _counts(crop_padding(pi, lb), crop_padding(gi, lb), self.num_classes)
        self._add(cm, len(p))

    def _add(self, cm: np.ndarray, batch_size: int) -> None:
        self.total += cm
        self._batches.append((cm, batch_size))

    def compute(self) -> dict:
        if not self._batches:
            raise MetricsInputError("no batches to evaluate: call update() first")
        out = {"mode": self.mode, "num_classes": self.num_classes}
        out.update(self._reduce(self.total, self._batches))
        out.update(
            num_batches=len(self._batches),
            num_images=int(sum(n for _, n in self._batches)),
            num_pixels=int(self.total.sum()),
            confusion_matrix=self.total.tolist(),
        )
        return out


def _labels(pred: object, gt: object, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    p, g = np.asarray(pred), np.asarray(gt)
    if p.shape != g.shape or p.ndim not in (2, 3):
        raise MetricsInputError(
            f"pred and gt must be label maps of the same shape (B, H, W) or (H, W); got pred "
            f"{p.shape}, gt {g.shape}"
        )
    for name, a in (("pred", p), ("gt", g)):
        if a.dtype.kind not in "biu":
            raise MetricsInputError(
                f"{name} must hold integer class ids, got dtype {a.dtype} (pass argmax of the logits)"
            )
    if p.size and (p.min() < 0 or p.max() >= num_classes):
        raise MetricsInputError(
            f"pred must be in [0, {num_classes}), got values in [{p.min()}, {p.max()}]"
        )
    return p, g
