"""What the detection modes share: the frozen config, the concatenated input arrays, and the
per-class result every mode fills in, so that `coco` and `yolop` report the same keys."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from runtime.metrics.errors import MetricsInputError

NO_VALUE = -1.0  # pycocotools' convention for a mean over nothing (no class has ground truth)


@dataclass(frozen=True)
class DetectionConfig:
    iou_thresholds: tuple[float, ...]
    max_det: int
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        thr = np.asarray(self.iou_thresholds, dtype=np.float64)
        if thr.ndim != 1 or thr.size == 0 or not ((thr > 0) & (thr <= 1)).all():
            raise MetricsInputError(
                f"iou_thresholds must be a non-empty 1-D list in (0, 1], got {self.iou_thresholds}"
            )
        if not (thr == 0.5).any():
            raise MetricsInputError(
                f"iou_thresholds must contain 0.5 (map50, P and R are reported there), got {thr}"
            )
        if int(self.max_det) < 1:
            raise MetricsInputError(f"max_det must be >= 1, got {self.max_det}")
        if len(self.class_names) == 0:
            raise MetricsInputError("class_names must name at least one class")

    @property
    def thresholds(self) -> np.ndarray:
        return np.asarray(self.iou_thresholds, dtype=np.float64)

    @property
    def t50(self) -> int:
        """Index of IoU 0.5, found by exact equality as pycocotools' summarize does."""
        return int(np.flatnonzero(self.thresholds == 0.5)[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass
class DetectionData:
    """All images concatenated; `*_img` is the image's position in update order (pycocotools
    visits images by sorted id, so update order plays the role of the id)."""

    num_images: int
    det_img: np.ndarray
    det_box: np.ndarray  # (N, 4) xyxy, original pixels
    det_score: np.ndarray
    det_cls: np.ndarray
    gt_img: np.ndarray
    gt_box: np.ndarray
    gt_cls: np.ndarray

    def gt_counts(self, num_classes: int) -> np.ndarray:
        return np.bincount(self.gt_cls, minlength=num_classes)

    def pred_counts(self, num_classes: int) -> np.ndarray:
        return np.bincount(self.det_cls, minlength=num_classes)


@dataclass
class ModeResult:
    """Per-class numbers a mode computes; classes without ground truth hold NaN and are left
    out of every mean."""

    ap: np.ndarray  # (K, T)
    recall: np.ndarray  # (K,) at the lowest confidence, IoU 0.5
    precision_at_min_conf: np.ndarray  # (K,) over all evaluated detections, IoU 0.5
    precision: np.ndarray  # (K,) at the best-F1 confidence, IoU 0.5
    recall_at_best_f1: np.ndarray  # (K,)
    f1: np.ndarray  # (K,)
    conf_at_best_f1: float | None


def _mean(values: np.ndarray, has_gt: np.ndarray) -> float:
    return float(np.mean(values[has_gt])) if has_gt.any() else NO_VALUE


def _opt(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


def build_result(mode: str, data: DetectionData, cfg: DetectionConfig, res: ModeResult) -> dict:
    """One result layout for every mode: overall means, then per class."""
    k = cfg.num_classes
    n_gt, n_pred = data.gt_counts(k), data.pred_counts(k)
    has_gt = n_gt > 0
    t50 = cfg.t50
    ap50, ap50_95 = res.ap[:, t50], res.ap.mean(axis=1)
    per_class = {}
    for i, name in enumerate(cfg.class_names):
        per_class[name] = {
            "ap50": _opt(ap50[i]),
            "ap50_95": _opt(ap50_95[i]),
            "precision": _opt(res.precision[i]),
            "recall": _opt(res.recall[i]),
            "recall_at_best_f1": _opt(res.recall_at_best_f1[i]),
            "f1": _opt(res.f1[i]),
            "num_gt": int(n_gt[i]),
            "num_pred": int(n_pred[i]),
        }
    out = {
        "mode": mode,
        "map50": _mean(ap50, has_gt),
        "map50_95": _mean(ap50_95, has_gt),
        "precision": _mean(res.precision, has_gt),
        "recall": _mean(res.recall, has_gt),
        "recall_at_best_f1": _mean(res.recall_at_best_f1, has_gt),
        "f1": _mean(res.f1, has_gt),
        "conf_at_best_f1": res.conf_at_best_f1,
        "precision_at_min_conf": _mean(res.precision_at_min_conf, has_gt),
        "num_images": int(data.num_images),
        "num_gt": int(n_gt.sum()),
        "num_pred": int(n_pred.sum()),
        "iou_thresholds": [float(t) for t in cfg.thresholds],
        "max_det": int(cfg.max_det),
        "per_class": per_class,
    }
    return out


def empty_per_class(k: int, t: int) -> ModeResult:
    """All-NaN result rows, filled in class by class by the modes."""
    nan_k = np.full(k, np.nan)
    return ModeResult(
        ap=np.full((k, t), np.nan),
        recall=nan_k.copy(),
        precision_at_min_conf=nan_k.copy(),
        precision=nan_k.copy(),
        recall_at_best_f1=nan_k.copy(),
        f1=nan_k.copy(),
        conf_at_best_f1=None,
    )
