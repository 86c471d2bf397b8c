"""Detection metrics of the evaluation protocol: one evaluator, several registered modes.

The evaluator only validates and stores per-image arrays; a mode turns all of them into per-class
numbers at `compute()`. Modes (see detection_coco.py / detection_yolop.py for exact semantics):
- `coco`: pycocotools' COCOeval (bbox, area 'all', maxDets = max_det), equal to it to 1e-9;
- `yolop`: YOLOv5's ap_per_class as YOLOP reports it (recall at the lowest confidence);
- `yolop_repo`: as `yolop`, with the detection-to-gt matching of hustvl/YOLOP's test loop.
Boxes are compared at original image resolution (undo the letterbox before `update`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import numpy as np

from runtime.metrics.detection_coco import evaluate_coco
from runtime.metrics.detection_data import DetectionConfig, DetectionData, ModeResult, build_result
from runtime.metrics.detection_yolop import evaluate_yolop, match_first_come, match_yolov5
from runtime.metrics.errors import MetricsInputError, as_float, as_labels, resolve_mode
from runtime.spec import DET_CLASSES, NMS_MAX_DET

COCO_IOU_THRESHOLDS: tuple[float, ...] = tuple(float(t) for t in np.linspace(0.5, 0.95, 10))

ModeFn = Callable[[DetectionData, DetectionConfig], ModeResult]
DETECTION_MODES: dict[str, ModeFn] = {
    "coco": evaluate_coco,
    "yolop": partial(evaluate_yolop, matcher=match_yolov5),
    "yolop_repo": partial(evaluate_yolop, matcher=match_first_come),
}


class DetectionEvaluator:
    """Accumulates one image per `update`; `compute()` may be called at any time."""

    def __init__(
        self,
        mode: str = "coco",
        iou_thresholds: Sequence[float] = COCO_IOU_THRESHOLDS,
        max_det: int = NMS_MAX_DET,
        class_names: Sequence[str] = DET_CLASSES,
    ) -> None:
        self._evaluate = resolve_mode(DETECTION_MODES, mode, "detection")
        self.mode = mode
        self.config = DetectionConfig(
            tuple(float(t) for t in np.asarray(iou_thresholds, dtype=np.float64).reshape(-1)),
            int(max_det),
            tuple(class_names),
        )
        self.reset()

    def reset(self) -> None:
        self._dets: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._gts: list[tuple[np.ndarray, np.ndarray]] = []

    @property
    def num_images(self) -> int:
        return len(self._gts)

    def update(
        self,
        pred_boxes_xyxy: np.ndarray,
        pred_scores: np.ndarray,
        pred_classes: np.ndarray,
        gt_boxes_xyxy: np.ndarray,
        gt_classes: np.ndarray,
    ) -> None:
        """One image: predictions (K,4), (K,), (K,) and ground truth (G,4), (G,), xyxy pixels
        of the original image. K or G may be 0."""
        k = self.config.num_classes
        boxes = _boxes(pred_boxes_xyxy, "pred_boxes_xyxy")
        scores = as_float(pred_scores, "pred_scores", 1)
        classes = as_labels(pred_classes, "pred_classes", 1, k)
        gt_boxes = _boxes(gt_boxes_xyxy, "gt_boxes_xyxy")
        gt_cls = as_labels(gt_classes, "gt_classes", 1, k)
        if not len(boxes) == len(scores) == len(classes):
            raise MetricsInputError(
                f"predictions disagree in length: boxes {len(boxes)}, scores {len(scores)}, "
                f"classes {len(classes)}"
            )
        if len(gt_boxes) != len(gt_cls):
            raise MetricsInputError(
                f"ground truth disagrees in length: boxes {len(gt_boxes)}, classes {len(gt_cls)}"
            )
        self._dets.append((boxes, scores, classes))
        self._gts.append((gt_boxes, gt_cls))

    def compute(self) -> dict:
        if not self._gts:
            raise MetricsInputError("no images to evaluate: call update() once per image first")
        data = self._data()
        return build_result(self.mode, data, self.config, self._evaluate(data, self.config))

    def _data(self) -> DetectionData:
        n_det = np.array([len(s) for _, s, _ in self._dets], dtype=np.int64)
        n_gt = np.array([len(c) for _, c in self._gts], dtype=np.int64)
        images = np.arange(len(self._gts), dtype=np.int64)
        return DetectionData(
            num_images=len(self._gts),
            det_img=np.repeat(images, n_det),
            det_box=np.concatenate([b for b, _, _ in self._dets]).reshape(-1, 4),
            det_score=np.concatenate([s for _, s, _ in self._dets]),
            det_cls=np.concatenate([c for _, _, c in self._dets]),
            gt_img=np.repeat(images, n_gt),
            gt_box=np.concatenate([b for b, _ in self._gts]).reshape(-1, 4),
            gt_cls=np.concatenate([c for _, c in self._gts]),
        )


def _boxes(x: object, name: str) -> np.ndarray:
    b = as_float(x, name, 2, 4)
    if ((b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])).any():
        raise MetricsInputError(
            f"{name} must be x1, y1, x2, y2 with x2 >= x1 and y2 >= y1; a box has x2 < x1 or "
            "y2 < y1 (xywh or cx,cy,w,h passed by mistake?)"
        )
    return b


def evaluate_detections(
    preds: Sequence[np.ndarray],
    gts: Sequence[np.ndarray | tuple[np.ndarray, np.ndarray]],
    mode: str = "coco",
    **options: object,
) -> dict:
    """Whole data set in one call. preds[i]: (K,6) [x1,y1,x2,y2,score,class] as
    `runtime.boxes.postprocess_detections` returns them (mapped back to original pixels);
    gts[i]: (G,5) [x1,y1,x2,y2,class] or a (boxes (G,4), classes (G,)) pair.
    `options` go to DetectionEvaluator (iou_thresholds, max_det, class_names)."""
    if len(preds) != len(gts):
        raise MetricsInputError(f"got {len(preds)} prediction arrays for {len(gts)} images")
    ev = DetectionEvaluator(mode, **options)  # type: ignore[arg-type]
    for p, g in zip(preds, gts):
        p = as_float(p, "preds[i]", 2, 6)
        g_boxes, g_cls = g if isinstance(g, tuple) else _split_gt(g)
        ev.update(p[:, :4], p[:, 4], p[:, 5], g_boxes, g_cls)
    return ev.compute()


def _split_gt(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    arr = as_float(g, "gts[i]", 2, 5)
    return arr[:, :4], arr[:, 4]
