"""Detection evaluator API: validation errors, the convenience function, the result layout,
and no torch behind `runtime.metrics`."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from runtime.metrics import (
    DetectionEvaluator,
    MetricsInputError,
    UnknownModeError,
    evaluate_detections,
)
from runtime.spec import DET_CLASSES

BOX = np.array([[0.0, 0, 10, 10]])


def test_unknown_mode_suggests_the_close_name():
    with pytest.raises(UnknownModeError, match=r"'yolo'.*Did you mean 'yolop'"):
        DetectionEvaluator("yolo")


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        ((np.zeros((2, 5)), np.zeros(2), np.zeros(2), BOX, [0]), r"\(N, 4\), got shape \(2, 5\)"),
        ((BOX, np.zeros(2), [0], BOX, [0]), "boxes 1, scores 2"),
        ((BOX, [0.5], [1], BOX, [0]), r"\[0, 1\)"),
        ((BOX, [0.5], [0.5], BOX, [0]), "integer class ids"),
        ((BOX, [np.nan], [0], BOX, [0]), "NaN"),
        ((np.array([[10.0, 0, 5, 10]]), [0.5], [0], BOX, [0]), "x2 >= x1"),
        ((BOX, [0.5], [0], BOX, [0, 0]), "boxes 1, classes 2"),
    ],
)
def test_bad_updates_raise_named_errors(args, pattern):
    with pytest.raises(MetricsInputError, match=pattern):
        DetectionEvaluator().update(*args)


def test_bad_config_and_empty_compute():
    with pytest.raises(MetricsInputError, match="0.5"):
        DetectionEvaluator(iou_thresholds=[0.6, 0.7])
    with pytest.raises(MetricsInputError, match="no images"):
        DetectionEvaluator().compute()


def test_evaluate_detections_equals_the_evaluator_and_layout():
    rng = np.random.default_rng(1)
    preds, gts = [], []
    ev = DetectionEvaluator("yolop")
    for _ in range(5):
        xy = rng.uniform(0, 100, (4, 2))
        gt = np.concatenate([xy, xy + rng.uniform(5, 30, (4, 2))], 1)
        pred = np.concatenate(
            [gt + rng.normal(0, 2, gt.shape), rng.random((4, 1)), np.zeros((4, 1))], 1
        )
        pred[:, 2:4] = np.maximum(pred[:, 2:4], pred[:, :2])
        preds.append(pred)
        gts.append(np.concatenate([gt, np.zeros((4, 1))], 1))
        ev.update(pred[:, :4], pred[:, 4], pred[:, 5], gt, np.zeros(4, int))
    assert evaluate_detections(preds, gts, "yolop") == ev.compute()
    as_pairs = [(g[:, :4], g[:, 4].astype(int)) for g in gts]
    res = evaluate_detections(preds, as_pairs, "coco", max_det=2)
    assert res["mode"] == "coco" and res["max_det"] == 2 and len(res["iou_thresholds"]) == 10
    assert list(res["per_class"]) == list(DET_CLASSES)
    for key in (
        "precision",
        "recall",
        "recall_at_best_f1",
        "f1",
        "conf_at_best_f1",
        "map50",
        "map50_95",
        "num_images",
        "num_gt",
        "num_pred",
        "precision_at_min_conf",
    ):
        assert key in res
    row = res["per_class"][DET_CLASSES[0]]
    assert set(row) == {
        "ap50",
        "ap50_95",
        "precision",
        "recall",
        "recall_at_best_f1",
        "f1",
        "num_gt",
        "num_pred",
    }
    assert (res["num_images"], res["num_gt"], res["num_pred"]) == (5, 20, 20)
    with pytest.raises(MetricsInputError, match="5 prediction arrays for 4 images"):
        evaluate_detections(preds, gts[:4])


def test_runtime_metrics_does_not_import_torch():
    code = "import sys, runtime.metrics; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("mode", ["coco", "yolop", "yolop_repo"])
def test_no_detection_overlaps_any_gt(mode):
    # Regression: an undertrained model whose boxes touch no ground truth at all.
    ev = DetectionEvaluator(mode)
    ev.update([[100, 100, 110, 110]], [0.9], [0], [[0, 0, 10, 10]], [0])
    res = ev.compute()
    assert res["map50"] == 0.0 and res["recall"] == 0.0 and res["num_gt"] == 1
