"""`yolop` / `yolop_repo` modes: hand-computed cases, and the vectorised matchers against literal
loop versions of the rules they implement."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.metrics import DetectionEvaluator
from runtime.metrics.detection_yolop import match_first_come, match_yolov5

THR = np.linspace(0.5, 0.95, 10)
A, B = [0.0, 0, 10, 10], [20.0, 20, 30, 30]


def run(mode: str, images: list) -> dict:
    ev = DetectionEvaluator(mode)
    for pred, scores, gt in images:
        ev.update(
            np.array(pred).reshape(-1, 4),
            np.array(scores),
            np.zeros(len(scores), int),
            np.array(gt).reshape(-1, 4),
            np.zeros(len(gt), int),
        )
    return ev.compute()


@pytest.mark.parametrize("mode", ["yolop", "yolop_repo"])
def test_one_image_two_gts_three_preds_by_hand(mode):
    """p1 (0.9) = A (IoU 1); p2 (0.8) on B with IoU 0.68; p3 (0.7) on A with IoU 0.78.
    t <= 0.65: TP TP FP -> recall .5 1 1, precision 1 1 2/3; sentinel recall 1.01. On the
      101-point grid the envelope is 1 up to 0.99 and np.interp reads 2/3 at recall 1 (the last
      of the repeated recall-1 points): AP = 0.99 + 0.01 * (1 + 2/3) / 2.
    t >= 0.7: TP FP FP -> recall .5 .5 .5, precision 1 1/2 1/3; 1 up to 0.49, 1/3 at 0.5, 0 at
      0.51 (sentinel): AP = 0.49 + 0.01 * (1 + 1/3) / 2 + 0.01 * (1/3) / 2."""
    pred = [A, [20, 20, 30, 26.8], [0, 0, 10, 7.8]]
    res = run(mode, [(pred, [0.9, 0.8, 0.7], [A, B])])
    ap_lo = 0.99 + 0.01 * (1 + 2 / 3) / 2
    ap_hi = 0.49 + 0.01 * (1 + 1 / 3) / 2 + 0.01 * (1 / 3) / 2
    assert res["map50"] == pytest.approx(ap_lo, abs=1e-9)
    assert res["map50_95"] == pytest.approx((4 * ap_lo + 6 * ap_hi) / 10, abs=1e-9)
    assert res["recall"] == pytest.approx(1.0)  # 2 of 2 gts matched over all detections
    assert res["precision_at_min_conf"] == pytest.approx(2 / 3)
    # 1000-point confidence grid, linear between detections: F1 peaks next to conf 0.8
    # (p1 + p2 kept: P = R = 1).
    assert res["conf_at_best_f1"] == pytest.approx(0.8, abs=1.5e-3)
    assert res["precision"] == pytest.approx(1.0, abs=0.02)
    assert res["recall_at_best_f1"] == pytest.approx(1.0, abs=0.02)


def test_matchers_differ_on_a_low_iou_high_score_detection():
    """One gt; p1 (0.9) IoU 0.62, p2 (0.8) IoU 0.88.
    yolop (YOLOv5): the gt keeps its highest-IoU detection p2 at every t <= 0.85; p1 is a FP.
      FP, TP -> recall 0 1, precision 0 1/2 -> envelope 1/2 everywhere -> AP 0.5 (t <= 0.85),
      0 at 0.9 and 0.95.
    yolop_repo (YOLOP's loop): p1 comes first and takes the gt, a TP where 0.62 > t (0.5..0.6),
      p2 is a FP everywhere: TP, FP -> AP = 0.99 + 0.01 * (1 + 1/2) / 2 at 3 thresholds."""
    images = [([[0, 0, 10, 6.2], [0, 0, 10, 8.8]], [0.9, 0.8], [A])]
    yolov5, repo = run("yolop", images), run("yolop_repo", images)
    assert yolov5["map50"] == pytest.approx(0.5, abs=1e-9)
    assert yolov5["map50_95"] == pytest.approx(8 * 0.5 / 10, abs=1e-9)
    ap = 0.99 + 0.01 * 1.5 / 2
    assert repo["map50"] == pytest.approx(ap, abs=1e-9)
    assert repo["map50_95"] == pytest.approx(3 * ap / 10, abs=1e-9)


@pytest.mark.parametrize("mode", ["yolop", "yolop_repo", "coco"])
def test_recall_is_matched_over_all_gts_at_lowest_confidence(mode):
    """Image 1: 3 gts, 2 found (0.9, 0.01) + 1 FP (0.95); image 2: 1 gt, no predictions;
    image 3: no gt, 1 FP. recall = 2 / 4 in every mode."""
    g3 = [A, B, [40, 40, 60, 60]]
    images = [
        ([A, B, [100, 100, 110, 110]], [0.9, 0.01, 0.95], g3),
        ([], [], [[5, 5, 25, 25]]),
        ([[0, 0, 4, 4]], [0.3], []),
    ]
    res = run(mode, images)
    assert res["recall"] == pytest.approx(0.5)
    assert (res["num_images"], res["num_gt"], res["num_pred"]) == (3, 4, 4)


def test_classes_are_matched_separately_and_classes_without_gt_ignored():
    ev = DetectionEvaluator("yolop", class_names=["car", "bus", "tram"])
    # The class-1 prediction sits exactly on the class-0 gt: it must not match it.
    ev.update(
        np.array([A, A]), np.array([0.9, 0.8]), np.array([1, 0]), np.array([A]), np.array([0])
    )
    res = ev.compute()
    assert res["per_class"]["car"]["ap50"] == pytest.approx(0.99 + 0.01 * (1 + 1) / 2)
    assert res["per_class"]["bus"]["ap50"] is None and res["per_class"]["tram"]["ap50"] is None
    assert res["map50"] == res["per_class"]["car"]["ap50"]


def test_max_det_keeps_the_highest_scores_per_image():
    ev = DetectionEvaluator("yolop", max_det=1)
    ev.update(
        np.array([[50.0, 50, 60, 60], A]),
        np.array([0.2, 0.9]),
        np.zeros(2, int),
        np.array([A]),
        np.zeros(1, int),
    )
    res = ev.compute()
    assert res["num_pred"] == 2 and res["precision_at_min_conf"] == 1.0


# Literal versions of the two matching rules, for random cross-checks.
def _yolov5_pairs(iou: np.ndarray, thr: np.ndarray) -> np.ndarray:
    tp = np.zeros((iou.shape[0], thr.size), dtype=bool)
    for t, th in enumerate(thr):
        pairs = sorted(
            (
                (iou[d, g], d, g)
                for d in range(iou.shape[0])
                for g in range(iou.shape[1])
                if iou[d, g] >= th
            ),
            key=lambda x: (-x[0], x[1], x[2]),
        )
        best_of_det: dict[int, tuple[float, int]] = {}
        for v, d, g in pairs:
            best_of_det.setdefault(d, (v, g))
        winners: dict[int, tuple[float, int]] = {}
        for d, (v, g) in sorted(best_of_det.items(), key=lambda x: (-x[1][0], x[0])):
            winners.setdefault(g, (v, d))
        for _, d in winners.values():
            tp[d, t] = True
    return tp


def _yolop_loop(iou: np.ndarray, thr: np.ndarray) -> np.ndarray:
    tp = np.zeros((iou.shape[0], thr.size), dtype=bool)
    detected: set[int] = set()
    for d in range(iou.shape[0]):
        g = int(np.argmax(iou[d]))
        if iou[d, g] > thr[0] and g not in detected:
            detected.add(g)
            tp[d] = iou[d, g] > thr
    return tp


@pytest.mark.parametrize("seed", range(5))
def test_vectorised_matchers_equal_loops(seed):
    rng = np.random.default_rng(seed)
    for _ in range(30):
        n_det, n_gt = int(rng.integers(1, 12)), int(rng.integers(1, 6))
        iou = np.where(rng.random((n_det, n_gt)) < 0.5, rng.uniform(0.3, 1.0, (n_det, n_gt)), 0.0)
        iou[rng.random((n_det, n_gt)) < 0.1] = -1.0  # other class
        np.testing.assert_array_equal(match_yolov5(iou[None], THR)[0], _yolov5_pairs(iou, THR))
        np.testing.assert_array_equal(match_first_come(iou[None], THR)[0], _yolop_loop(iou, THR))
