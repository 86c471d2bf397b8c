"""Box utilities and NMS in numpy: the one implementation used by metrics, the torch side (via
numpy) and the runtime."""

from __future__ import annotations

import numpy as np


def xywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    b = np.asarray(b)
    out = np.empty_like(b)
    half_w, half_h = b[..., 2] / 2, b[..., 3] / 2
    out[..., 0] = b[..., 0] - half_w
    out[..., 1] = b[..., 1] - half_h
    out[..., 2] = b[..., 0] + half_w
    out[..., 3] = b[..., 1] + half_h
    return out


def xyxy_to_xywh(b: np.ndarray) -> np.ndarray:
    b = np.asarray(b)
    out = np.empty_like(b)
    out[..., 0] = (b[..., 0] + b[..., 2]) / 2
    out[..., 1] = (b[..., 1] + b[..., 3]) / 2
    out[..., 2] = b[..., 2] - b[..., 0]
    out[..., 3] = b[..., 3] - b[..., 1]
    return out


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes: (N,4) x (M,4) -> (N,M)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    area_a = (a[:, 2] - a[:, 0]).clip(0) * (a[:, 3] - a[:, 1]).clip(0)
    area_b = (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clip(0).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def box_iou_batched(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`box_iou` per leading index: (..., N, 4) x (..., M, 4) -> (..., N, M). Lets the metrics
    score many images in one call instead of one small call per image."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    area_a = (a[..., 2] - a[..., 0]).clip(0) * (a[..., 3] - a[..., 1]).clip(0)
    area_b = (b[..., 2] - b[..., 0]).clip(0) * (b[..., 3] - b[..., 1]).clip(0)
    lt = np.maximum(a[..., :, None, :2], b[..., None, :, :2])
    rb = np.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
    inter = (rb - lt).clip(0).prod(-1)
    union = area_a[..., :, None] + area_b[..., None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def nms(
    boxes: np.ndarray, scores: np.ndarray, iou_thres: float, max_det: int | None = None
) -> np.ndarray:
    """Greedy NMS on xyxy boxes; returns kept indices, highest score first."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1).clip(0) * (y2 - y1).clip(0)
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        if max_det is not None and len(keep) >= max_det:
            break
        rest = order[1:]
        w = (np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest])).clip(0)
        h = (np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest])).clip(0)
        inter = w * h
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-12)
        order = rest[iou <= iou_thres]
    return np.asarray(keep, dtype=np.int64)


def batched_nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    iou_thres: float,
    max_det: int | None = None,
) -> np.ndarray:
    """Class-aware NMS by offsetting boxes per class (one greedy pass). Same result as `nms`;
    runs the dense variant, which is faster up to DENSE_NMS_LIMIT boxes and falls back above."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if boxes.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    offset = (np.asarray(classes, dtype=np.float64) * (boxes.max() + 1.0))[:, None]
    return nms_dense(boxes + offset, scores, iou_thres, max_det)


def postprocess_detections(
    pred: np.ndarray,
    conf_thres: float,
    iou_thres: float,
    max_det: int,
    max_candidates: int = 30000,
) -> list[np.ndarray]:
    """Decoded YOLO predictions (B, N, 5+nc: cx,cy,w,h,obj,cls...) -> per-image (K,6) arrays
    [x1,y1,x2,y2,score,class] in network-input pixels, after confidence filter and NMS."""
    pred = np.asarray(pred)
    if pred.ndim != 3 or pred.shape[-1] < 6:
        raise ValueError(f"expected decoded predictions (B, N, 5+nc), got shape {pred.shape}")
    out: list[np.ndarray] = []
    for p in pred:
        cls_scores = p[:, 5:] * p[:, 4:5]
        cls = cls_scores.argmax(1)
        score = cls_scores[np.arange(len(p)), cls]
        m = score > conf_thres
        p, score, cls = p[m], score[m], cls[m]
        if len(score) > max_candidates:
            top = np.argsort(-score, kind="stable")[:max_candidates]
            p, score, cls = p[top], score[top], cls[top]
        boxes = xywh_to_xyxy(p[:, :4].astype(np.float64))
        keep = batched_nms(boxes, score, cls, iou_thres, max_det)
        out.append(
            np.concatenate([boxes[keep], score[keep, None], cls[keep, None].astype(np.float64)], 1)
            if len(keep)
            else np.zeros((0, 6))
        )
    return out


# Up to this many candidates the dense variant below holds the whole IoU matrix (8 MB at 1024).
DENSE_NMS_LIMIT = 1024


def nms_dense(
    boxes: np.ndarray, scores: np.ndarray, iou_thres: float, max_det: int | None = None
) -> np.ndarray:
    """Same result as `nms` (same order, ties, threshold), from one IoU matrix: the greedy pass
    then costs one boolean OR per kept box instead of an IoU computation per kept box. Falls back
    to `nms` above DENSE_NMS_LIMIT boxes, where the matrix would be too large."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(boxes) > DENSE_NMS_LIMIT:
        return nms(boxes, scores, iou_thres, max_det)
    order = np.argsort(-np.asarray(scores, dtype=np.float64).reshape(-1), kind="stable")
    x1, y1, x2, y2 = (np.ascontiguousarray(c) for c in boxes[order].T)
    areas = (x2 - x1).clip(0) * (y2 - y1).clip(0)
    # Same arithmetic as `nms`, on 2-D broadcasts of 1-D columns (fast; a [N, N, 2] is not).
    w = (np.minimum(x2[:, None], x2[None, :]) - np.maximum(x1[:, None], x1[None, :])).clip(0)
    h = (np.minimum(y2[:, None], y2[None, :]) - np.maximum(y1[:, None], y1[None, :])).clip(0)
    inter = w * h
    over = inter / np.maximum(areas[:, None] + areas[None, :] - inter, 1e-12) > iou_thres
    removed = np.zeros(len(order), dtype=bool)
    keep: list[int] = []
    for i in range(len(order)):
        if removed[i]:
            continue
        keep.append(i)
        if max_det is not None and len(keep) >= max_det:
            break
        removed |= over[i]
    return order[np.asarray(keep, dtype=np.int64)]


def topk_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the `k` highest scores, in no particular order (O(N), like EfficientNMS's
    topK). All indices when there are at most `k`."""
    scores = np.asarray(scores).reshape(-1)
    if len(scores) <= k:
        return np.arange(len(scores))
    return np.argpartition(-scores, k - 1)[:k]


# Candidates the blocked NMS below examines per step. Temporaries stay at BLOCK x BLOCK (and
# BLOCK x max_det) floats: 128 keeps them in cache; 256 measured several times slower per box.
NMS_BLOCK = 128


def _iou_over(
    x1: np.ndarray,
    y1: np.ndarray,
    x2: np.ndarray,
    y2: np.ndarray,
    areas: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    iou_thres: float,
) -> np.ndarray:
    """IoU(rows x cols) > iou_thres with `nms`'s exact float64 arithmetic (elementwise the same
    operations in the same order, so the same rounding), in place to stay in cache."""
    w = np.minimum(x2[rows, None], x2[None, cols])
    w -= np.maximum(x1[rows, None], x1[None, cols])
    np.maximum(w, 0.0, out=w)
    h = np.minimum(y2[rows, None], y2[None, cols])
    h -= np.maximum(y1[rows, None], y1[None, cols])
    np.maximum(h, 0.0, out=h)
    w *= h  # intersection
    union = areas[rows, None] + areas[None, cols]
    union -= w
    np.maximum(union, 1e-12, out=union)
    np.divide(w, union, out=union)
    return union > iou_thres


def nms_early_exit(
    boxes: np.ndarray, scores: np.ndarray, iou_thres: float, max_det: int
) -> np.ndarray:
    """Same result as `nms` (order, ties, threshold, float64 arithmetic), vectorised in blocks and
    stopping at `max_det`. The next NMS_BLOCK candidates in score order first lose those that a
    box kept so far overlaps (one block x kept IoU matrix), then are resolved greedily against
    each other (one block x block matrix, walked as bitsets). A box is thus dropped iff an earlier
    kept box overlaps it, as in the greedy loop, and only candidates up to the last kept one are
    ever looked at. A few numpy calls per block, whatever the scene."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, dtype=np.float64).reshape(-1), kind="stable")
    x1, y1, x2, y2 = (np.ascontiguousarray(c) for c in boxes[order].T)
    areas = (x2 - x1).clip(0) * (y2 - y1).clip(0)
    keep: list[int] = []
    for start in range(0, len(order), NMS_BLOCK):
        if len(keep) >= max_det:
            break
        block = np.arange(start, min(start + NMS_BLOCK, len(order)))
        if keep:
            kept = np.asarray(keep, dtype=np.int64)
            block = block[~_iou_over(x1, y1, x2, y2, areas, kept, block, iou_thres).any(0)]
        if block.size == 0:
            continue
        over = np.packbits(_iou_over(x1, y1, x2, y2, areas, block, block, iou_thres), 1, "little")
        removed = 0  # bitset over the block: a few hundred ns per candidate, no numpy call
        for a in range(len(block)):
            if (removed >> a) & 1:
                continue
            keep.append(int(block[a]))
            if len(keep) >= max_det:
                break
            removed |= int.from_bytes(over[a].tobytes(), "little")
    return order[np.asarray(keep, dtype=np.int64)]


def batched_nms_early_exit(
    boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou_thres: float, max_det: int
) -> np.ndarray:
    """Class-aware `nms_early_exit`: boxes are offset per class by more than their extent, so
    boxes of different classes never overlap."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if boxes.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    span = boxes.max() - min(boxes.min(), 0.0) + 1.0
    offset = (np.asarray(classes, dtype=np.float64) * span)[:, None]
    return nms_early_exit(boxes + offset, scores, iou_thres, max_det)
