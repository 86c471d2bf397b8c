from __future__ import annotations

import numpy as np
import pytest

from runtime.boxes import batched_nms, nms, nms_dense
from runtime.geometry import boxes_from_letterbox, letterbox_params
from runtime.io_names import DET_LAYOUT_CXCYWH, SEG_LOGITS
from runtime.postprocess import OutputMismatchError, Postprocessor
from runtime.sidecar import (
    BatchRange,
    CreatedBy,
    DetInfo,
    InputInfo,
    ModelInfo,
    PreprocessInfo,
    SegInfo,
    Sidecar,
    SidecarError,
)
from runtime.spec import DET_CLASSES, IMAGENET_MEAN, IMAGENET_STD

HW = (32, 64)
DET_DEFAULTS = {"class_names": DET_CLASSES, "decoder": "yolop_anchor"}


def sidecar(**det_kw) -> Sidecar:
    seg_output = det_kw.pop("seg_output", "argmax_uint8")
    return Sidecar(
        format="onnx",
        artifact="m.onnx",
        sha256="0" * 64,
        input=InputInfo(shape=(-1, 3, *HW)),
        batch=BatchRange(),
        outputs=(),
        preprocess=PreprocessInfo(HW, IMAGENET_MEAN, IMAGENET_STD, letterbox=True),
        det=DetInfo(
            **{"conf_thres": 0.25, "iou_thres": 0.45, "max_det": 10, **DET_DEFAULTS, **det_kw}
        ),
        seg=SegInfo(output=seg_output),
        precision="fp32",
        model=ModelInfo("t"),
        created_by=CreatedBy("0", "now"),
    )


def seg(b, value=0):
    return np.full((b, *HW), value, np.uint8)


DET = np.array(
    [
        [4, 4, 20, 20, 0.9, 0],
        [5, 5, 21, 21, 0.8, 0],
        [5, 5, 21, 21, 0.85, 1],
        [40, 8, 60, 30, 0.7, 0],
        [0, 0, 4, 4, 0.1, 0],
    ],
    np.float32,
)


def test_nms_filters_and_boxes_map_back_to_the_frame():
    lb = letterbox_params((360, 640), HW)  # 640x360 -> 57x32 content + 3 px pad left
    out = {"det": DET[None], "drivable": seg(1), "lane": seg(1)}
    (r,) = Postprocessor(sidecar())(out, [lb], ["f0"])
    # class-aware: the 0.8 box overlaps the 0.9 box (same class) and goes; the class-1 box stays
    np.testing.assert_allclose(r.scores, [0.9, 0.85, 0.7], rtol=1e-6)
    assert r.classes.tolist() == [0, 1, 0]
    np.testing.assert_allclose(r.boxes, boxes_from_letterbox(DET[[0, 2, 3], :4], lb), rtol=1e-5)
    assert r.boxes.max() <= 640 and r.frame_id == "f0"
    assert r.drivable.shape == (360, 640) and r.lane.shape == (360, 640)


def test_nms_in_graph_takes_det_count_rows():
    det = np.zeros((2, 4, 6), np.float32)
    det[:, :3] = DET[:3]
    out = {"det": det, "det_count": np.array([1, 3], np.int32), "drivable": seg(2), "lane": seg(2)}
    lbs = [letterbox_params(HW, HW)] * 2
    r0, r1 = Postprocessor(sidecar(nms_in_graph=True))(out, lbs, [0, 1])
    assert len(r0.scores) == 1 and len(r1.scores) == 3  # no second NMS, no threshold


def test_model_layout_cxcywh_goes_through_the_shared_decoder():
    raw = np.array([[[12, 12, 16, 16, 0.9, 1.0], [13, 13, 16, 16, 0.8, 1.0]]], np.float32)
    out = {"det": raw, "drivable": seg(1), "lane": seg(1)}
    (r,) = Postprocessor(sidecar(layout=DET_LAYOUT_CXCYWH))(out, [letterbox_params(HW, HW)], [0])
    np.testing.assert_allclose(r.boxes, [[4, 4, 20, 20]])


def test_masks_are_cropped_and_resized_to_the_frame():
    lb = letterbox_params((64, 64), HW)  # square frame -> 32x32 content, 16 px pad left/right
    mask = np.zeros((1, *HW), np.uint8)
    mask[0, :, 16:32] = 1  # left half of the content
    mask[0, :, :16] = 1  # padding: must be cropped away
    out = {"det": DET[None], "drivable": mask, "lane": seg(1)}
    (r,) = Postprocessor(sidecar())(out, [lb], [0])
    assert r.drivable.shape == (64, 64)
    assert r.drivable[:, :32].all() and not r.drivable[:, 32:].any()


def test_logits_become_argmax_masks():
    logits = np.zeros((1, 2, *HW), np.float32)
    logits[0, 1, :, :10] = 1.0
    out = {"det": DET[None], "drivable": logits, "lane": logits}
    (r,) = Postprocessor(sidecar(seg_output=SEG_LOGITS))(out, [letterbox_params(HW, HW)], [0])
    assert r.drivable[:, :10].all() and not r.drivable[:, 10:].any()
    assert r.drivable.dtype == np.uint8


def test_output_checks():
    post = Postprocessor(sidecar(nms_in_graph=True))
    with pytest.raises(OutputMismatchError, match="det_count"):
        post.check_outputs(["det", "drivable", "lane"])
    with pytest.raises(OutputMismatchError, match=r"\[1, N, 6\]"):
        Postprocessor(sidecar())(
            {"det": np.zeros((1, 5, 7)), "drivable": seg(1), "lane": seg(1)},
            [letterbox_params(HW, HW)],
            [0],
        )
    # a raw detection output needs the decoder's layout (cx, cy, w, h, obj, cls) and no NMS
    raw = {
        "decoded_in_graph": False,
        "strides": (8, 16, 32),
        "reg_max": 4,
        "decoder": "anchor_free_dfl",
    }
    with pytest.raises(OutputMismatchError, match="decoded_in_graph is false"):
        Postprocessor(sidecar(**raw))
    with pytest.raises(SidecarError, match="det.*reg_max"):
        sidecar(**{**raw, "reg_max": 0, "layout": "cxcywh_obj_cls"})


@pytest.mark.parametrize("seed", range(5))
def test_dense_nms_equals_the_reference_nms(seed):
    rng = np.random.default_rng(seed)
    n = 300
    xy = rng.uniform(0, 200, (n, 2))
    boxes = np.column_stack([xy, xy + rng.uniform(5, 60, (n, 2))])
    scores = rng.choice([0.3, 0.5, 0.7, 0.9], n)  # many ties: order must match too
    classes = rng.integers(0, 3, n)
    offset = boxes + (classes * (boxes.max() + 1.0))[:, None]
    for thr, max_det in [(0.45, None), (0.6, 20), (0.0, None)]:
        want = nms(offset, scores, thr, max_det)  # the reference greedy loop
        np.testing.assert_array_equal(nms_dense(offset, scores, thr, max_det), want)
        np.testing.assert_array_equal(batched_nms(boxes, scores, classes, thr, max_det), want)
    np.testing.assert_array_equal(nms_dense(boxes[:0], scores[:0], 0.5), np.zeros(0, np.int64))
