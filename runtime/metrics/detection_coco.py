"""`coco` mode: pycocotools' COCOeval (bbox, area 'all', no crowd) re-derived in vectorised numpy.

Every rule that moves a number is kept bit-for-bit: per image and class the detections are ordered
by a stable sort on -score (pycocotools' mergesort) and cut to max_det; IoU is computed from xywh
boxes with the same float operations as pycocotools' C code (right edge = x + w, areas w * h, no
+1); each detection, in that order, takes the *last* highest-IoU gt still free with
`iou >= min(t, 1 - 1e-10)`; the per-class curve is a stable sort of all images' detections
(images in update order), the precision is made monotone and read at 101 recall points with
searchsorted(side='left'), zero past the end of the curve.

Speed comes from doing the greedy matching for all IoU thresholds and many (image, class) units at
once: units are packed into padded (units, detections, gts) blocks and the detections are stepped
through in lockstep. Detections that reach no gt at the lowest threshold cannot change any match
and are left out of the stepping.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from runtime.metrics.detection_blocks import PAD_IOU, match_candidates, unit_blocks
from runtime.metrics.detection_data import (
    DetectionConfig,
    DetectionData,
    ModeResult,
    empty_per_class,
)

REC_THRS = np.linspace(0.0, 1.0, 101)  # COCO's 101 recall points
_BLOCK_ELEMENTS = 1 << 21  # padded IoU block size: bounds memory (~16 MB per float64 block)


def evaluate_coco(data: DetectionData, cfg: DetectionConfig) -> ModeResult:
    keep, unit = _order_and_truncate(data, cfg)
    g_order = np.lexsort((data.gt_img, data.gt_cls))
    g_unit = data.gt_cls[g_order] * data.num_images + data.gt_img[g_order]
    d_xywh = _xywh(data.det_box[keep])
    g_xywh = _xywh(data.gt_box[g_order])
    thr = np.minimum(cfg.thresholds, 1 - 1e-10)
    match = _match_all(d_xywh, unit, g_xywh, g_unit, thr)
    return _accumulate(match, data.det_score[keep], data.det_cls[keep], data, cfg)


def _xywh(b: np.ndarray) -> np.ndarray:
    """What a pycocotools user would store as `bbox`: x, y, x2 - x, y2 - y."""
    return np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1)


def _order_and_truncate(data: DetectionData, cfg: DetectionConfig) -> tuple[np.ndarray, np.ndarray]:
    """Detection indices sorted by (class, image, -score) - stable, so equal scores keep the
    caller's order as pycocotools' mergesort does - and cut to max_det per (image, class)."""
    order = np.lexsort((-data.det_score, data.det_img, data.det_cls))
    unit = data.det_cls[order] * data.num_images + data.det_img[order]
    _, starts, counts = np.unique(unit, return_index=True, return_counts=True)
    rank = np.arange(order.size) - np.repeat(starts, counts)
    kept = rank < cfg.max_det
    return order[kept], unit[kept]


def _match_all(
    d_xywh: np.ndarray, d_unit: np.ndarray, g_xywh: np.ndarray, g_unit: np.ndarray, thr: np.ndarray
) -> np.ndarray:
    """(T, n_det) bool: detection matched at each threshold. Units without gt match nothing."""
    match = np.zeros((thr.size, d_unit.size), dtype=bool)
    for block in unit_blocks(d_unit, g_unit, _BLOCK_ELEMENTS):
        iou = _coco_iou(d_xywh[block.det], g_xywh[block.gt])
        iou[~block.pair_ok] = PAD_IOU
        idx, matched = match_candidates(iou, block, thr, partial(_lockstep, thr=thr))
        match[:, idx] = matched.T
    return match


def _coco_iou(d: np.ndarray, g: np.ndarray) -> np.ndarray:
    """(U, D, 4) x (U, G, 4) xywh -> (U, D, G), the float operations of pycocotools' bbIou."""
    dx, dy, dw, dh = (d[:, :, i, None] for i in range(4))
    gx, gy, gw, gh = (g[:, None, :, i] for i in range(4))
    iw = np.minimum(dw + dx, gw + gx) - np.maximum(dx, gx)
    ih = np.minimum(dh + dy, gh + gy) - np.maximum(dy, gy)
    inter = iw * ih
    union = (dw * dh + gw * gh) - inter
    out = np.zeros(inter.shape)
    np.divide(inter, union, out=out, where=(iw > 0) & (ih > 0))
    return out


def _lockstep(iou: np.ndarray, thr: np.ndarray) -> np.ndarray:
    """(U, C, G) IoUs, detections in score order -> (U, C, T) matched.

    pycocotools scans the gts keeping the running best with `>=`, starting from the threshold;
    the winner is therefore the last gt with the highest IoU among the free ones, accepted when
    that IoU reaches the threshold.
    """
    n_units, n_det, n_gt = iou.shape
    taken = np.zeros((n_units, thr.size, n_gt), dtype=bool)
    matched = np.zeros((n_units, n_det, thr.size), dtype=bool)
    rows, cols = np.arange(n_units)[:, None], np.arange(thr.size)[None, :]
    for c in range(n_det):
        avail = np.where(taken, PAD_IOU, iou[:, None, c, :])
        last_best = n_gt - 1 - avail[:, :, ::-1].argmax(axis=2)
        ok = avail.max(axis=2) >= thr
        matched[:, c, :] = ok
        taken[rows, cols, last_best] |= ok
    return matched


def _accumulate(
    match: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    data: DetectionData,
    cfg: DetectionConfig,
) -> ModeResult:
    """Per-class precision/recall curves (pycocotools' accumulate) and the best-F1 point."""
    res = empty_per_class(cfg.num_classes, cfg.thresholds.size)
    n_gt = data.gt_counts(cfg.num_classes)
    bounds = np.searchsorted(classes, np.arange(cfg.num_classes + 1))  # classes are sorted
    curves = {}
    for k in np.flatnonzero(n_gt > 0):
        a, b = bounds[k], bounds[k + 1]
        order = np.argsort(-scores[a:b], kind="mergesort")
        m = match[:, a:b][:, order]
        res.ap[k], tp50 = _class_ap(m, float(n_gt[k]), cfg.t50)
        n = order.size
        res.recall[k] = tp50[-1] / n_gt[k] if n else 0.0
        res.precision_at_min_conf[k] = tp50[-1] / n if n else 0.0
        curves[int(k)] = (scores[a:b][order], tp50, int(n_gt[k]))
    _best_f1(curves, res)
    return res


def _class_ap(m: np.ndarray, npig: float, t50: int) -> tuple[np.ndarray, np.ndarray]:
    """AP per threshold of one class from its (T, n) match matrix in score order."""
    ap = np.zeros(m.shape[0])
    tp50 = np.zeros(0)
    for t in range(m.shape[0]):
        tp = np.cumsum(m[t]).astype(np.float64)
        fp = np.cumsum(~m[t]).astype(np.float64)
        if t == t50:
            tp50 = tp
        if tp.size == 0:
            continue
        rc = tp / npig
        pr = tp / (fp + tp + np.spacing(1))
        envelope = np.maximum.accumulate(pr[::-1])[::-1]
        idx = np.searchsorted(rc, REC_THRS, side="left")
        q = np.zeros(REC_THRS.size)
        inside = idx < tp.size
        q[inside] = envelope[idx[inside]]
        ap[t] = q.mean()
    return ap, tp50


def _best_f1(curves: dict[int, tuple[np.ndarray, np.ndarray, int]], res: ModeResult) -> None:
    """P, R, F1 at the one confidence threshold (keep score >= c) that maximises the mean F1
    over classes with gt. Candidates are the distinct scores, so ties are never split; among
    equal F1 the highest confidence wins. F1 = 2 TP / (n_pred + n_gt)."""
    for k in curves:
        res.precision[k] = res.recall_at_best_f1[k] = res.f1[k] = 0.0
    scores = [s for s, _, _ in curves.values() if s.size]
    if not scores:
        return
    cands = np.unique(np.concatenate(scores))[::-1]
    f1_sum = np.zeros(cands.size)
    for s, tp, n_gt in curves.values():
        n, hits = _counts_at(s, tp, cands)
        f1_sum += 2 * hits / (n + n_gt)
    best = cands[int(np.argmax(f1_sum))]
    res.conf_at_best_f1 = float(best)
    for k, (s, tp, n_gt) in curves.items():
        n, hits = _counts_at(s, tp, np.array([best]))
        res.precision[k] = hits[0] / n[0] if n[0] else 0.0
        res.recall_at_best_f1[k] = hits[0] / n_gt
        res.f1[k] = 2 * hits[0] / (n[0] + n_gt)


def _counts_at(s: np.ndarray, tp: np.ndarray, conf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Detections with score >= conf, and how many of them are TPs (s sorted descending)."""
    n = np.searchsorted(-s, -conf, side="right")
    hits = np.where(n > 0, tp[np.maximum(n - 1, 0)] if tp.size else 0.0, 0.0)
    return n, hits
