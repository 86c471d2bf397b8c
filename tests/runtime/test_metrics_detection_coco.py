"""`coco` mode against pycocotools' COCOeval on the same detections (|diff| < 1e-9), and by hand."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from runtime.metrics import DetectionEvaluator

pytest.importorskip("pycocotools")
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402

Image = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def random_problem(seed: int, n_img: int = 40, k: int = 1, max_pred: int = 50) -> list[Image]:
    """0..20 gts, 0..max_pred preds (jittered gts + random boxes), scores rounded so many tie."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n_img):
        g = int(rng.integers(0, 21))
        xy = rng.uniform(0, 1000, (g, 2))
        gt = np.concatenate([xy, xy + rng.uniform(2, 200, (g, 2))], 1)
        gc = rng.integers(0, k, g)
        p = int(rng.integers(0, max_pred + 1))
        if g:
            src = rng.integers(0, g, p)
            pred = gt[src] + rng.normal(0, 8, (p, 4))
            pc = np.where(rng.random(p) < 0.8, gc[src], rng.integers(0, k, p))
        else:
            xy = rng.uniform(0, 1000, (p, 2))
            pred = np.concatenate([xy, xy + rng.uniform(2, 200, (p, 2))], 1)
            pc = rng.integers(0, k, p)
        pred[:, 2:] = np.maximum(pred[:, 2:], pred[:, :2])
        images.append((pred, np.round(rng.random(p), 1), pc, gt, gc))
    return images


def pycoco_eval(images: list[Image], k: int, max_det: int, thr: np.ndarray) -> COCOeval:
    anns, dets = [], []
    for i, (pb, ps, pc, gb, gc) in enumerate(images):
        for b, c in zip(gb.tolist(), gc.tolist()):
            w, h = b[2] - b[0], b[3] - b[1]
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": c + 1,
                    "bbox": [b[0], b[1], w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
        for b, s, c in zip(pb.tolist(), ps.tolist(), pc.tolist()):
            dets.append(
                {
                    "image_id": i + 1,
                    "category_id": c + 1,
                    "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                    "score": s,
                }
            )
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {
            "images": [{"id": i + 1} for i in range(len(images))],
            "annotations": anns,
            "categories": [{"id": c + 1} for c in range(k)],
        }
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        # pycocotools sorts maxDets; summarize needs three and reads stats[0] at 100.
        ev.params.maxDets = [1, 10, max_det] if max_det >= 10 else [max_det]
        ev.params.iouThrs = thr
        ev.evaluate()
        ev.accumulate()
        if max_det >= 10:
            ev.summarize()
    return ev


def ours(images: list[Image], k: int = 1, max_det: int = 100, mode: str = "coco") -> dict:
    ev = DetectionEvaluator(mode, max_det=max_det, class_names=[f"c{i}" for i in range(k)])
    for im in images:
        ev.update(*im)
    return ev.compute()


@pytest.mark.parametrize("seed", range(8))
def test_matches_pycocotools_stats(seed):
    k = 1 + seed % 3
    images = random_problem(seed, k=k, max_pred=160 if seed % 2 else 50)  # >100: truncation
    res = ours(images, k=k, max_det=100)
    ref = pycoco_eval(images, k, 100, np.array(res["iou_thresholds"]))
    assert abs(res["map50_95"] - ref.stats[0]) < 1e-9
    assert abs(res["map50"] - ref.stats[1]) < 1e-9
    rec50 = ref.eval["recall"][0, :, 0, -1]  # IoU 0.5, all detections (max_det)
    got = [res["per_class"][f"c{i}"]["recall"] for i in range(k)]
    assert np.abs(np.array([-1.0 if r is None else r for r in got]) - rec50).max() < 1e-12


@pytest.mark.parametrize("seed", [11, 12])
def test_matches_pycocotools_per_class_with_small_max_det(seed):
    k = 3
    images = random_problem(seed, k=k, max_pred=60)
    res = ours(images, k=k, max_det=7)
    prec = pycoco_eval(images, k, 7, np.array(res["iou_thresholds"])).eval["precision"]
    for c in range(k):
        p = prec[:, :, c, 0, -1]
        row = res["per_class"][f"c{c}"]
        if (p == -1).all():
            assert row["ap50"] is None and row["ap50_95"] is None
            continue
        assert abs(row["ap50_95"] - p.mean()) < 1e-9
        assert abs(row["ap50"] - p[0].mean()) < 1e-9


def test_edge_images_and_unseen_class_match_pycocotools():
    rng = np.random.default_rng(5)
    gt = np.array([[10.0, 10, 50, 60], [100, 100, 180, 150], [10, 10, 50, 60]])  # a duplicate gt
    images: list[Image] = [
        (
            gt + rng.normal(0, 3, gt.shape),
            np.array([0.5, 0.5, 0.5]),
            np.zeros(3, int),
            gt,
            np.zeros(3, int),
        ),
        (np.zeros((0, 4)), np.zeros(0), np.zeros(0, int), gt[:2], np.zeros(2, int)),  # no preds
        (gt[:2] + 1.0, np.array([0.9, 0.2]), np.array([0, 1]), np.zeros((0, 4)), np.zeros(0, int)),
        (np.zeros((0, 4)), np.zeros(0), np.zeros(0, int), np.zeros((0, 4)), np.zeros(0, int)),
    ]
    res = ours(images, k=2)
    ref = pycoco_eval(images, 2, 100, np.array(res["iou_thresholds"]))
    assert abs(res["map50_95"] - ref.stats[0]) < 1e-9 and abs(res["map50"] - ref.stats[1]) < 1e-9
    assert res["per_class"]["c1"]["ap50"] is None  # class 1 has no gt: out of every mean
    assert (res["num_images"], res["num_gt"], res["num_pred"]) == (4, 5, 5)


def test_no_ground_truth_gives_pycocotools_minus_one():
    images: list[Image] = [
        (
            np.array([[0.0, 0, 5, 5]]),
            np.array([0.5]),
            np.zeros(1, int),
            np.zeros((0, 4)),
            np.zeros(0, int),
        )
    ]
    res = ours(images)
    assert res["map50"] == res["map50_95"] == res["recall"] == -1.0


def test_hand_computed_ap_and_best_f1():
    """2 gts; TP (0.9), FP (0.8), TP (0.7): recall 0.5, 0.5, 1; precision 1, 1/2, 2/3.
    Envelope 1, 2/3, 2/3; recall points 0..0.5 (51) read 1, 0.51..1 (50) read 2/3."""
    gt = np.array([[0.0, 0, 10, 10], [20, 20, 30, 30]])
    pred = np.array([[0.0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30]])
    images: list[Image] = [
        (pred, np.array([0.9, 0.8, 0.7]), np.zeros(3, int), gt, np.zeros(2, int))
    ]
    res = ours(images)
    assert res["map50"] == pytest.approx((51 + 50 * 2 / 3) / 101, abs=1e-12)
    assert res["map50_95"] == pytest.approx((51 + 50 * 2 / 3) / 101, abs=1e-12)  # IoU 1 everywhere
    # F1 = 2TP / (n_pred + n_gt): 2/3 at 0.9, 1/2 at 0.8, 4/5 at 0.7 -> 0.7 wins.
    assert res["conf_at_best_f1"] == 0.7
    assert (res["precision"], res["recall_at_best_f1"], res["f1"]) == pytest.approx((2 / 3, 1, 0.8))
    assert res["recall"] == 1.0 and res["precision_at_min_conf"] == pytest.approx(2 / 3)


def test_best_f1_never_splits_tied_scores():
    """A FP tied with the second TP at 0.7: threshold 0.7 keeps both (F1 2*2/(4+2) = 2/3), the
    same F1 as 0.9 alone (2/(1+2)); equal F1 -> the higher confidence."""
    gt = np.array([[0.0, 0, 10, 10], [20, 20, 30, 30]])
    pred = np.array([[0.0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30], [80, 80, 90, 90]])
    scores = np.array([0.9, 0.8, 0.7, 0.7])
    res = ours([(pred, scores, np.zeros(4, int), gt, np.zeros(2, int))])
    assert res["conf_at_best_f1"] == 0.9
    assert (res["precision"], res["recall_at_best_f1"]) == pytest.approx((1.0, 0.5))
