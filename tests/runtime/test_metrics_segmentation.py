"""Segmentation metrics: hand-computed confusion matrices, global vs YOLOP's per-batch means,
letterbox padding excluded."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.geometry import letterbox_params
from runtime.metrics import (
    MetricsInputError,
    SegmentationEvaluator,
    UnknownModeError,
    confusion_matrix,
    segmentation_scores,
)


def test_confusion_matrix_and_scores_by_hand():
    """gt 0 0 1 1 1 / pred 0 1 1 1 0 -> rows gt: [[1, 1], [1, 2]].
    IoU0 = 1 / (2 + 2 - 1) = 1/3, IoU1 = 2 / (3 + 3 - 2) = 1/2; recall0 = 1/2, recall1 = 2/3."""
    gt = np.array([[0, 0, 1, 1, 1]])
    pred = np.array([[0, 1, 1, 1, 0]])
    cm = confusion_matrix(pred, gt, 2)
    np.testing.assert_array_equal(cm, [[1, 1], [1, 2]])
    s = segmentation_scores(cm)
    assert s["pixel_accuracy"] == pytest.approx(3 / 5)
    assert s["per_class_iou"] == pytest.approx([1 / 3, 1 / 2])
    assert s["miou"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert s["iou"] == pytest.approx(1 / 2)
    assert s["recall"] == s["yolop_accuracy"] == pytest.approx(2 / 3)
    assert s["precision"] == pytest.approx(2 / 3)
    assert s["balanced_accuracy"] == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_three_classes_and_ignored_label():
    gt = np.array([[0, 1, 2, 255], [2, 2, 1, 0]])
    pred = np.array([[0, 2, 2, 1], [2, 1, 1, 0]])
    cm = confusion_matrix(pred, gt, 3)  # the 255 pixel is not counted
    np.testing.assert_array_equal(cm, [[2, 0, 0], [0, 1, 1], [0, 1, 2]])
    s = segmentation_scores(cm)
    assert s["per_class_iou"] == pytest.approx([1.0, 1 / 3, 1 / 2])
    assert "iou" not in s  # class-1 aliases only for binary tasks


def test_global_and_per_batch_differ_as_yolop_averages():
    """Batch 1 (1 image): one lane pixel, found -> lane IoU 1. Batch 2 (3 images): no lane pixel
    in gt or prediction -> lane IoU 0 under YOLOP's convention (empty union counts as 0).
    global: IoU 1. per_batch: weighted by batch size (1 * 1 + 3 * 0) / 4 = 0.25."""
    b1_gt = np.zeros((1, 4, 4), int)
    b1_gt[0, 1, 1] = 1
    b2 = np.zeros((3, 4, 4), int)
    results = {}
    for mode in ("global", "per_batch"):
        ev = SegmentationEvaluator(2, mode)
        ev.update(b1_gt.copy(), b1_gt)
        ev.update(b2, b2)
        results[mode] = ev.compute()
    g, p = results["global"], results["per_batch"]
    assert g["iou"] == 1.0 and g["recall"] == 1.0 and g["miou"] == 1.0
    assert p["iou"] == pytest.approx(0.25) and p["recall"] == pytest.approx(0.25)
    assert p["miou"] == pytest.approx((1 * 1.0 + 3 * 0.5) / 4)
    assert g["pixel_accuracy"] == p["pixel_accuracy"] == 1.0
    assert g["mode"] == "global" and p["mode"] == "per_batch"
    assert (p["num_batches"], p["num_images"], p["num_pixels"]) == (2, 4, 64)
    assert p["confusion_matrix"] == g["confusion_matrix"] == [[63, 0], [0, 1]]


def test_wrong_predictions_only_in_padding_score_perfectly():
    lb = letterbox_params((720, 1280), (384, 640))  # 12 padding rows top and bottom
    rng = np.random.default_rng(0)
    gt = np.zeros((2, 384, 640), np.int64)
    gt[:, 12:372] = rng.integers(0, 2, (2, 360, 640))
    pred = gt.copy()
    pred[:, :12] = 1 - gt[:, :12]
    pred[:, 372:] = 1 - gt[:, 372:]
    for boxes in (lb, [lb, lb]):
        ev = SegmentationEvaluator(2)
        ev.update_letterboxed(pred, gt, boxes)
        s = ev.compute()
        assert s["pixel_accuracy"] == 1.0 and s["miou"] == 1.0 and s["iou"] == 1.0
        assert s["num_pixels"] == 2 * 360 * 640
    ev = SegmentationEvaluator(2)
    ev.update(pred, gt)
    assert ev.compute()["pixel_accuracy"] == pytest.approx(360 / 384)


def test_bad_inputs_raise_named_errors():
    ev = SegmentationEvaluator(2)
    with pytest.raises(MetricsInputError, match=r"\(2, 4, 4\).*\(2, 4, 5\)"):
        ev.update(np.zeros((2, 4, 4), int), np.zeros((2, 4, 5), int))
    with pytest.raises(MetricsInputError, match="argmax"):
        ev.update(np.zeros((1, 4, 4)), np.zeros((1, 4, 4), int))
    with pytest.raises(MetricsInputError, match=r"\[0, 2\)"):
        ev.update(np.full((1, 4, 4), 2), np.zeros((1, 4, 4), int))
    with pytest.raises(MetricsInputError, match="letterbox"):
        ev.update_letterboxed(
            np.zeros((1, 4, 4), int),
            np.zeros((1, 4, 4), int),
            letterbox_params((720, 1280), (384, 640)),
        )
    with pytest.raises(MetricsInputError, match="no batches"):
        ev.compute()
    with pytest.raises(UnknownModeError, match="per_batch"):
        SegmentationEvaluator(2, "perbatch")
