"""Parity comparators on hand-made outputs: what passes, what fails, what is excused and why."""

from __future__ import annotations

import numpy as np
import pytest

from export.checks.parity import compare_case
from export.config import ParityTolerances
from export.onnx.deploy import DeploySpec

TOL = ParityTolerances()


def _by_name(results):
    return {r.name: r for r in results}


def _seg(b=1):
    logits = np.zeros((b, 2, 4, 4), np.float32)
    logits[:, 1, :2] = 5.0  # top half: class 1 by a wide margin
    logits[:, 1, 3, 3] = 1e-6  # one pixel is a tie (margin 1e-6)
    return logits


def _dense_case(shift_px=0.0, flip_tie=False, flip_clear=False):
    det = np.array([[[10, 10, 50, 60, 0.9, 0], [100, 20, 140, 90, 0.5, 0]]], np.float32)
    logits = _seg()
    mask = logits.argmax(1).astype(np.uint8)
    ref = {"det": det, "drivable": mask, "lane": mask}
    got_mask = mask.copy()
    if flip_tie:
        got_mask[0, 3, 3] ^= 1
    if flip_clear:
        got_mask[0, 0, 0] ^= 1
    got_det = det.copy()
    got_det[0, 1, 0] += shift_px
    got = {"det": got_det, "drivable": got_mask, "lane": mask}
    return ref, {"drivable": logits, "lane": logits}, got


def test_dense_boxes_within_scaled_tolerance_pass_and_a_pixel_fails():
    spec = DeploySpec(det_decoder="yolop_anchor")
    r = _by_name(compare_case(*_dense_case(shift_px=0.05), spec, TOL))
    assert r["det.boxes"].ok and abs(r["det.boxes"].value - 0.05) < 1e-5
    assert r["det.boxes"].tol == pytest.approx(1e-4 + 5e-4 * 140)  # scaled by the largest box
    r = _by_name(compare_case(*_dense_case(shift_px=1.0), spec, TOL))
    assert not r["det.boxes"].ok and r["det.boxes"].value == 1.0


def test_mask_tie_flip_is_excused_a_clear_flip_is_not():
    spec = DeploySpec(det_decoder="yolop_anchor")
    r = _by_name(compare_case(*_dense_case(flip_tie=True), spec, TOL))
    assert r["drivable"].ok and r["drivable"].detail == "(1 tie pixels excused)"
    r = _by_name(compare_case(*_dense_case(flip_clear=True), spec, TOL))
    assert not r["drivable"].ok and r["drivable"].value == 1.0


def _nms_out(rows, k=5):
    det = np.zeros((1, k, 6), np.float32)
    det[0, : len(rows)] = rows
    return {"det": det, "det_count": np.array([len(rows)], np.int32)}


def _nms_case(ref_rows, got_rows):
    logits = _seg()
    mask = logits.argmax(1).astype(np.uint8)
    seg = {"drivable": mask, "lane": mask}
    ref = {**_nms_out(ref_rows), **seg}
    got = {**_nms_out(got_rows), **seg}
    return ref, {"drivable": logits, "lane": logits}, got


def test_nms_rows_are_paired_regardless_of_order():
    a, b = [10, 10, 50, 60, 0.9, 0], [100, 20, 140, 90, 0.5, 0]
    spec = DeploySpec(nms_in_graph=True, conf_thres=0.25, det_decoder="yolop_anchor")
    r = _by_name(compare_case(*_nms_case([a, b], [b, a]), spec, TOL))
    assert r["det_count"].ok and r["det_count"].value == 0 and r["det.boxes"].value == 0


def test_nms_near_ties_are_excused_real_differences_are_not():
    spec = DeploySpec(nms_in_graph=True, conf_thres=0.25, iou_thres=0.6, det_decoder="yolop_anchor")
    keep = [100, 20, 140, 90, 0.5, 0]
    a = [10, 10, 50, 60, 0.7, 0]
    a_twin = [11, 10, 51, 60, 0.7005, 0]  # IoU 0.95 with a, score within 2e-3: NMS coin flip
    r = _by_name(compare_case(*_nms_case([keep, a], [keep, a_twin]), spec, TOL))
    assert r["det_count"].ok and "2 near-tie rows excused" in r["det_count"].detail
    at_threshold = [200, 20, 240, 90, 0.2505, 0]  # score within 2e-3 of conf 0.25
    r = _by_name(compare_case(*_nms_case([keep, at_threshold], [keep]), spec, TOL))
    assert r["det_count"].ok
    confident = [200, 20, 240, 90, 0.8, 0]  # a confident box ONNX lost: a real difference
    r = _by_name(compare_case(*_nms_case([keep, confident], [keep]), spec, TOL))
    assert not r["det_count"].ok and r["det_count"].value == 1
    assert "(torch [2] vs onnx [1]" in r["det_count"].detail


def test_nms_rows_at_the_max_det_cut_are_excused():
    spec = DeploySpec(nms_in_graph=True, conf_thres=0.25, max_det=2, det_decoder="yolop_anchor")
    a, b = [10, 10, 50, 60, 0.9, 0], [100, 20, 140, 90, 0.5, 0]
    b_rival = [200, 20, 240, 90, 0.5001, 0]  # ties with b for the last of K=2 slots
    ref, logits, got = _nms_case([a, b], [a, b_rival])
    for d in (ref, got):
        d["det"] = d["det"][:, :2]  # K = 2: both sides are full
    r = _by_name(compare_case(ref, logits, got, spec, TOL))
    assert r["det_count"].ok and "2 near-tie rows excused" in r["det_count"].detail
