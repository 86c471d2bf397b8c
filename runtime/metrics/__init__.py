"""Evaluation-protocol metrics in numpy (no torch): detection (coco / yolop modes) and
segmentation (global / per-batch confusion matrices). Shared by the trainer and the runtime."""

from __future__ import annotations

from runtime.metrics.detection import (
    COCO_IOU_THRESHOLDS,
    DETECTION_MODES,
    DetectionEvaluator,
    evaluate_detections,
)
from runtime.metrics.errors import MetricsInputError, UnknownModeError
from runtime.metrics.segmentation import (
    SEGMENTATION_MODES,
    SegmentationEvaluator,
    confusion_matrix,
    segmentation_scores,
)

__all__ = [
    "COCO_IOU_THRESHOLDS",
    "DETECTION_MODES",
    "SEGMENTATION_MODES",
    "DetectionEvaluator",
    "MetricsInputError",
    "SegmentationEvaluator",
    "UnknownModeError",
    "confusion_matrix",
    "evaluate_detections",
    "segmentation_scores",
]
