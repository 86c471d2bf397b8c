"""`yolop` modes: the YOLOv5 `ap_per_class` protocol that YOLOP's numbers come from.

Per image, a true-positive matrix (detections x IoU thresholds) is built by a matcher; then, over
all images, detections are sorted by confidence and per class:
- AP per threshold: recall = TP / (n_gt + 1e-16), precision = TP / (TP + FP), sentinels
  (recall 0, precision 1) in front and (last recall + 0.01, precision 0) behind as in YOLOP's
  `compute_ap`, precision envelope, 101-point np.interp, trapezoid rule;
- P/R curves on a 1000-point confidence grid (np.interp along the confidence-sorted curve,
  recall 0 and precision 1 above the highest confidence), F1 = 2PR / (P + R + 1e-16); the
  operating point maximises the class-mean F1 **without smoothing** (newer YOLOv5 applies a 0.1
  box filter first, which can move the point to a confidence where the curve is not evaluated);
- `recall` is the curve at grid confidence 0, i.e. TP / n_gt over every detection kept by NMS
  (conf > 0.001): YOLOP's code picks the grid index of maximal mean recall, which is that one.

Matchers (one per mode, registered in detection.py):
- `match_yolov5` (mode `yolop`): at each threshold, pairs (detection, gt) of the same class with
  IoU >= threshold; each detection keeps its highest-IoU gt, then each gt keeps its highest-IoU
  detection (ties: lowest index). A detection that loses its gt is not re-assigned.
- `match_first_come` (mode `yolop_repo`): the loop in hustvl/YOLOP's validate: in confidence
  order, a detection takes its best same-class gt if that IoU > the lowest threshold and the gt is
  still free; it is then a TP at every threshold strictly below that IoU.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from runtime.boxes import box_iou_batched
from runtime.metrics.detection_blocks import PAD_IOU, match_candidates, unit_blocks
from runtime.metrics.detection_data import (
    DetectionConfig,
    DetectionData,
    ModeResult,
    empty_per_class,
)

Matcher = Callable[[np.ndarray, np.ndarray], np.ndarray]
CONF_GRID = np.linspace(0.0, 1.0, 1000)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)
EPS = 1e-16
_BLOCK_ELEMENTS = 1 << 18  # padded (images, dets, gts) IoU block; matchers add a T axis


def match_yolov5(iou: np.ndarray, thr: np.ndarray) -> np.ndarray:
    """(U, D, G) same-class IoUs (-1 across classes or padding) -> (U, D, T) true positives."""
    n_units, n_det, n_gt = iou.shape
    valid = iou[:, None] >= thr[None, :, None, None]  # (U, T, D, G)
    cand = np.where(valid, iou[:, None], -1.0)
    best_g = cand.argmax(axis=3)  # each detection's best gt, lowest index on ties
    best_v = cand.max(axis=3)
    has = np.asarray(valid.any(axis=3))
    chose = (best_g[..., None] == np.arange(n_gt)) & has[..., None]
    winner = np.where(chose, best_v[..., None], -1.0).argmax(axis=2)  # (U, T, G)
    u, t, g = np.nonzero(chose.any(axis=2))
    tp = np.zeros((n_units, thr.size, n_det), dtype=bool)
    tp[u, t, winner[u, t, g]] = True
    return tp.transpose(0, 2, 1)


def match_first_come(iou: np.ndarray, thr: np.ndarray) -> np.ndarray:
    """(U, D, G) same-class IoUs, detections in confidence order -> (U, D, T), YOLOP's loop."""
    n_units, n_det, n_gt = iou.shape
    best_v, best_g = iou.max(axis=2), iou.argmax(axis=2)
    claims = (best_g[..., None] == np.arange(n_gt)) & (best_v > thr.min())[..., None]
    first = claims.argmax(axis=1)  # (U, G): the first detection claiming each gt
    u, g = np.nonzero(claims.any(axis=1))
    d = first[u, g]
    tp = np.zeros((n_units, n_det, thr.size), dtype=bool)
    tp[u, d] = best_v[u, d, None] > thr[None, :]
    return tp


def evaluate_yolop(data: DetectionData, cfg: DetectionConfig, matcher: Matcher) -> ModeResult:
    keep, tp = _true_positives(data, cfg, matcher)
    order = np.argsort(-data.det_score[keep], kind="mergesort")  # stable: image order on ties
    keep, tp = keep[order], tp[order]
    return _ap_per_class(tp, data.det_score[keep], data.det_cls[keep], data, cfg)


def _true_positives(
    data: DetectionData, cfg: DetectionConfig, matcher: Matcher
) -> tuple[np.ndarray, np.ndarray]:
    """Kept detection indices (image order, confidence order inside an image, max_det per image
    as NMS applies it) and their (n, T) TP matrix."""
    order = np.lexsort((-data.det_score, data.det_img))
    img = data.det_img[order]
    _, starts, counts = np.unique(img, return_index=True, return_counts=True)
    kept = (np.arange(order.size) - np.repeat(starts, counts)) < cfg.max_det
    keep, img = order[kept], img[kept]
    g_order = np.argsort(data.gt_img, kind="stable")
    d_box, d_cls = data.det_box[keep], data.det_cls[keep]
    g_box, g_cls = data.gt_box[g_order], data.gt_cls[g_order]
    tp = np.zeros((keep.size, cfg.thresholds.size), dtype=bool)
    thr = cfg.thresholds
    for block in unit_blocks(img, data.gt_img[g_order], _BLOCK_ELEMENTS):
        iou = box_iou_batched(d_box[block.det], g_box[block.gt])
        same = d_cls[block.det][:, :, None] == g_cls[block.gt][:, None, :]
        iou[~(block.pair_ok & same)] = PAD_IOU
        idx, matched = match_candidates(iou, block, thr, lambda x: matcher(x, thr))
        tp[idx] = matched
    return keep, tp


def _ap_per_class(
    tp: np.ndarray, conf: np.ndarray, cls: np.ndarray, data: DetectionData, cfg: DetectionConfig
) -> ModeResult:
    res = empty_per_class(cfg.num_classes, cfg.thresholds.size)
    n_gt = data.gt_counts(cfg.num_classes)
    classes = np.flatnonzero(n_gt > 0)
    p_grid = np.zeros((classes.size, CONF_GRID.size))
    r_grid = np.zeros((classes.size, CONF_GRID.size))
    for row, c in enumerate(classes):
        sel = cls == c
        res.ap[c] = 0.0
        if not sel.any():
            continue
        tpc = np.cumsum(tp[sel], axis=0, dtype=np.float64)
        fpc = np.cumsum(~tp[sel], axis=0, dtype=np.float64)
        recall = tpc / (n_gt[c] + EPS)
        precision = tpc / (tpc + fpc)
        neg_conf = -conf[sel]
        r_grid[row] = np.interp(-CONF_GRID, neg_conf, recall[:, cfg.t50], left=0)
        p_grid[row] = np.interp(-CONF_GRID, neg_conf, precision[:, cfg.t50], left=1)
        res.ap[c] = [_compute_ap(recall[:, t], precision[:, t]) for t in range(tp.shape[1])]
    _operating_point(classes, p_grid, r_grid, res)
    return res


def _compute_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    mrec = np.concatenate(([0.0], recall, [recall[-1] + 0.01]))
    mpre = np.concatenate(([1.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    y = np.interp(RECALL_POINTS, mrec, mpre)
    return float(np.sum(np.diff(RECALL_POINTS) * (y[1:] + y[:-1]) / 2.0))


def _operating_point(
    classes: np.ndarray, p_grid: np.ndarray, r_grid: np.ndarray, res: ModeResult
) -> None:
    if classes.size == 0:
        return
    f1 = 2 * p_grid * r_grid / (p_grid + r_grid + EPS)
    best = int(np.argmax(f1.mean(axis=0)))
    res.conf_at_best_f1 = float(CONF_GRID[best])
    res.precision[classes] = p_grid[:, best]
    res.recall_at_best_f1[classes] = r_grid[:, best]
    res.f1[classes] = f1[:, best]
    res.recall[classes] = r_grid[:, 0]
    res.precision_at_min_conf[classes] = p_grid[:, 0]
