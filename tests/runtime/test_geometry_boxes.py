"""Letterbox geometry and NMS: the numpy code both sides share."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.boxes import (
    batched_nms,
    box_iou,
    nms,
    postprocess_detections,
    xywh_to_xyxy,
    xyxy_to_xywh,
)
from runtime.geometry import (
    boxes_from_letterbox,
    boxes_to_letterbox,
    crop_padding,
    letterbox_image,
    letterbox_mask,
    letterbox_params,
    unletterbox_mask,
)


def test_yolop_protocol_geometry():
    lb = letterbox_params((720, 1280), (384, 640))
    assert (lb.new_h, lb.new_w, lb.pad_top, lb.pad_bottom, lb.pad_left) == (360, 640, 12, 12, 0)
    assert lb.scale == 0.5


def test_box_roundtrip_and_pixels():
    lb = letterbox_params((720, 1280), (384, 640))
    boxes = np.array([[100.0, 200.0, 300.0, 400.0]])
    lbx = boxes_to_letterbox(boxes, lb)
    np.testing.assert_allclose(lbx, [[50, 112, 150, 212]])
    np.testing.assert_allclose(boxes_from_letterbox(lbx, lb), boxes)
    img = np.zeros((720, 1280, 3), np.uint8)
    img[200:400, 100:300] = 255
    out = letterbox_image(img, lb)
    ys, xs = np.nonzero(out[..., 0] == 255)
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (50, 112, 150, 212)
    assert (out[:12] == 114).all() and (out[-12:] == 114).all()


def test_mask_letterbox_and_back():
    lb = letterbox_params((90, 160), (64, 128))
    m = np.zeros((90, 160), np.uint8)
    m[40:60, 20:100] = 1
    lm = letterbox_mask(m, lb)
    assert lm.shape == (64, 128) and lm[: lb.pad_top].sum() == 0
    assert crop_padding(lm, lb).shape == (lb.new_h, lb.new_w)
    back = unletterbox_mask(lm, lb)
    assert back.shape == (90, 160)
    assert (back != m).mean() < 0.02


def test_letterbox_rejects_wrong_size():
    lb = letterbox_params((90, 160), (64, 128))
    with pytest.raises(ValueError, match="image is 10x10, letterbox expects 160x90"):
        letterbox_image(np.zeros((10, 10, 3), np.uint8), lb)


def test_box_conversions_and_iou():
    b = np.array([[10.0, 20.0, 4.0, 6.0]])
    np.testing.assert_allclose(xywh_to_xyxy(b), [[8, 17, 12, 23]])
    np.testing.assert_allclose(xyxy_to_xywh(xywh_to_xyxy(b)), b)
    iou = box_iou(np.array([[0, 0, 2, 2]]), np.array([[1, 1, 3, 3], [5, 5, 6, 6]]))
    np.testing.assert_allclose(iou, [[1 / 7, 0.0]])


def test_nms_against_bruteforce():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 100, (200, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 30, (200, 2))], 1)
    scores = rng.uniform(size=200)
    keep = nms(boxes, scores, 0.5)
    # Reference: the textbook O(n^2) loop.
    order, ref = list(np.argsort(-scores, kind="stable")), []
    while order:
        i = order.pop(0)
        ref.append(i)
        order = [j for j in order if box_iou(boxes[i], boxes[j])[0, 0] <= 0.5]
    assert keep.tolist() == ref
    assert len(nms(boxes, scores, 0.5, max_det=3)) == 3


def test_batched_nms_keeps_overlapping_boxes_of_other_classes():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10.5]], float)
    assert sorted(batched_nms(boxes, np.array([0.9, 0.8]), np.array([0, 1]), 0.5)) == [0, 1]
    assert batched_nms(boxes, np.array([0.9, 0.8]), np.array([0, 0]), 0.5).tolist() == [0]


def test_postprocess_detections_filters_and_scores():
    pred = np.zeros((1, 3, 6))
    pred[0, 0] = [50, 50, 20, 20, 0.9, 1.0]
    pred[0, 1] = [51, 50, 20, 20, 0.8, 1.0]  # suppressed by the first
    pred[0, 2] = [10, 10, 4, 4, 0.0005, 1.0]  # below conf
    (out,) = postprocess_detections(pred, conf_thres=0.001, iou_thres=0.6, max_det=300)
    np.testing.assert_allclose(out, [[40, 40, 60, 60, 0.9, 0]])
    with pytest.raises(ValueError, match=r"expected decoded predictions \(B, N, 5\+nc\)"):
        postprocess_detections(np.zeros((3, 6)), 0.1, 0.5, 10)
