"""The bounded postprocess: top-k before NMS, early-exit class-aware NMS equal to the reference
greedy NMS, masks mapped back only when read."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.boxes import (
    batched_nms,
    batched_nms_early_exit,
    nms,
    nms_early_exit,
    topk_indices,
)
from runtime.geometry import letterbox_params, unletterbox_mask
from runtime.postprocess import FrameResult, Postprocessor, select_rows
from runtime.sidecar import (
    BatchRange,
    CreatedBy,
    DeployThresholds,
    DetInfo,
    InputInfo,
    ModelInfo,
    PreprocessInfo,
    SegInfo,
    Sidecar,
)
from runtime.spec import DET_CLASSES, IMAGENET_MEAN, IMAGENET_STD
from runtime.testing import yolop_count


def _boxes(rng, n, extent=200.0, rounded=False):
    xy = rng.uniform(0, extent, (n, 2))
    wh = rng.uniform(2, extent / 3, (n, 2))
    scores = rng.uniform(0, 1, n)
    if rounded:  # many exact ties
        scores = np.round(scores, 1)
    return np.column_stack([xy, xy + wh]), scores


@pytest.mark.parametrize("seed", range(8))
def test_early_exit_nms_equals_reference_nms(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 400))
    boxes, scores = _boxes(rng, n, rounded=seed % 2 == 0)
    for iou in (0.3, 0.45, 0.7):
        for max_det in (1, 7, 100, 10_000):
            ref = nms(boxes, scores, iou, max_det)
            got = nms_early_exit(boxes, scores, iou, max_det)
            np.testing.assert_array_equal(got, ref, err_msg=f"n={n} iou={iou} max={max_det}")


@pytest.mark.parametrize("seed", range(4))
def test_class_aware_early_exit_equals_batched_nms(seed):
    rng = np.random.default_rng(100 + seed)
    boxes, scores = _boxes(rng, 300)
    boxes -= 50  # negative coordinates must not let classes overlap
    classes = rng.integers(0, 3, 300)
    ref = batched_nms(boxes, scores, classes, 0.45, 50)
    got = batched_nms_early_exit(boxes, scores, classes, 0.45, 50)
    np.testing.assert_array_equal(got, ref)
    # identical boxes of two classes both survive
    two = batched_nms_early_exit(np.array([[0, 0, 10, 10]] * 2), [0.9, 0.8], [0, 1], 0.5, 10)
    assert sorted(two.tolist()) == [0, 1]


def test_topk_indices_are_the_k_best():
    scores = np.random.default_rng(0).permutation(1000).astype(np.float64)
    top = topk_indices(scores, 10)
    assert sorted(scores[top].tolist()) == list(range(990, 1000))
    assert topk_indices(scores[:5], 10).tolist() == [0, 1, 2, 3, 4]


def test_worst_case_is_bounded_by_topk_and_max_det():
    """Every YOLOP anchor scores ~1 (the worst frame): only topk candidates reach NMS, at most
    max_det survive, and they are exactly NMS of the topk best."""
    rng = np.random.default_rng(0)
    n = yolop_count((384, 640))
    boxes, _ = _boxes(rng, n, extent=600.0)
    rows = np.column_stack([boxes, 1 - rng.uniform(0, 1e-6, n), np.zeros(n)]).astype(np.float32)
    t = DeployThresholds(conf_thres=0.25, iou_thres=0.45, max_det=100, topk=1000)
    kept = select_rows(rows, t)
    assert 0 < len(kept) <= 100
    top = rows[topk_indices(rows[:, 4], 1000)].astype(np.float64)
    ref = top[nms(top[:, :4], top[:, 4], 0.45, 100)]
    np.testing.assert_array_equal(kept, ref)
    assert (np.diff(kept[:, 4]) <= 0).all()  # best first
    assert len(select_rows(rows, DeployThresholds(conf_thres=1.0))) == 0  # score > conf


def _sidecar() -> Sidecar:
    return Sidecar(
        format="onnx",
        artifact="m.onnx",
        sha256="0" * 64,
        input=InputInfo(shape=(-1, 3, 32, 64)),
        batch=BatchRange(),
        outputs=(),
        preprocess=PreprocessInfo((32, 64), IMAGENET_MEAN, IMAGENET_STD, letterbox=True),
        det=DetInfo(class_names=DET_CLASSES, decoder="yolop_anchor"),
        seg=SegInfo(),
        precision="fp32",
        model=ModelInfo("t"),
        created_by=CreatedBy("0", "now"),
    )


def test_masks_are_mapped_back_only_when_read_and_once():
    lb = letterbox_params((360, 640), (32, 64))
    drivable = np.zeros((1, 32, 64), np.uint8)
    drivable[:, :, :20] = 1
    out = {"det": np.zeros((1, 4, 6), np.float32), "drivable": drivable, "lane": drivable.copy()}
    (r,) = Postprocessor(_sidecar())(out, [lb], ["f"])
    assert isinstance(r, FrameResult) and r._full == {}  # nothing resized yet
    assert r.mask_net("drivable").shape == (lb.new_h, lb.new_w)  # padding cut, no resize
    full = r.drivable
    assert full.shape == (360, 640) and r._full.keys() == {"drivable"}
    np.testing.assert_array_equal(full, unletterbox_mask(drivable[0], lb))
    assert r.drivable is full  # cached
    assert r.mask("nope") is None


@pytest.mark.parametrize("block", [1, 3, 7, 64])
def test_blocked_nms_equals_reference_for_any_block_size(monkeypatch, block):
    from runtime import boxes as boxes_mod

    monkeypatch.setattr(boxes_mod, "NMS_BLOCK", block)
    rng = np.random.default_rng(block)
    boxes, scores = _boxes(rng, 150, extent=120.0, rounded=True)
    for max_det in (1, 5, 40, 1000):
        ref = nms(boxes, scores, 0.45, max_det)
        np.testing.assert_array_equal(nms_early_exit(boxes, scores, 0.45, max_det), ref)
