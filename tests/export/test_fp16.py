"""The FP16 converter on small graphs whose FP16 result can be checked exactly, and the
agreement metrics / loud failure on hand-made outputs."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from export.checks.ort import OrtModel
from export.config import Fp16Thresholds
from export.errors import Fp16Error
from export.fp16.agreement import fp16_agreement, require_fp16_agreement
from export.fp16.convert import convert_to_fp16
from export.fp16.emulation import emulate_fp16
from export.onnx.deploy import DeploySpec


def _graph(w: np.ndarray):
    inits = [
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"),
    ]
    nodes = [
        helper.make_node("Conv", ["images", "w"], ["c"], name="conv"),
        helper.make_node("Resize", ["c", "", "scales"], ["r"], mode="nearest", name="up"),
        helper.make_node("Sigmoid", ["r"], ["s"], name="sig"),
        helper.make_node("Mul", ["s", "s"], ["out"], name="after_sig"),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["b", 1, 4, 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["b", 1, 8, 8])],
        inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_fp16_regions_casts_and_exact_numbers():
    w = np.full((1, 1, 1, 1), 1.1, np.float32)  # 1.1 is not exact in FP16 (1.099609375)
    m16, info = convert_to_fp16(_graph(w))
    inits = {t.name: t.data_type for t in m16.graph.initializer}
    assert inits["w__fp16"] == TensorProto.FLOAT16 and inits["scales"] == TensorProto.FLOAT
    ops = [n.op_type for n in m16.graph.node]
    assert ops.count("Cast") == 2 == info.casts_added  # in to FP16, back to FP32 before Sigmoid
    assert (info.fp16_nodes, info.fp32_nodes, info.fp32_ops) == (2, 2, ("Mul", "Sigmoid"))
    x = np.linspace(-2, 2, 16, dtype=np.float32).reshape(1, 1, 4, 4)
    got = OrtModel(m16)(x)["out"]
    # ORT CPU runs the FP16 Conv in FP32 and drops the Cast pairs around it (see
    # fp16_emulation): only the FP16 weight shows, not the input or output rounding.
    c = x.astype(np.float64) * float(np.float16(1.1))
    wref = (1 / (1 + np.exp(-c.repeat(2, 2).repeat(2, 3)))) ** 2
    np.testing.assert_allclose(got, wref, rtol=1e-5)
    assert np.abs(got - OrtModel(_graph(w))(x)["out"]).max() > 1e-5  # FP16 weights used


def test_emulation_rounds_activations_where_ort_cpu_does_not():
    w = np.full((1, 1, 1, 1), 1.1, np.float32)
    x = np.linspace(-2, 2, 16, dtype=np.float32).reshape(1, 1, 4, 4)
    c16 = (x.astype(np.float16) * np.float16(1.1)).astype(np.float32)  # FP16 conv result
    ref = (1 / (1 + np.exp(-c16.repeat(2, 2).repeat(2, 3).astype(np.float64)))) ** 2
    emulated = OrtModel(emulate_fp16(_graph(w)))(x)["out"]
    assert np.abs(emulated - ref).max() < 1e-6
    ort_fp16 = OrtModel(convert_to_fp16(_graph(w))[0])(x)["out"]
    assert np.abs(ort_fp16 - ref).max() > 1e-4  # ORT CPU kept the conv output in FP32
    huge = OrtModel(emulate_fp16(_graph(np.full((1, 1, 1, 1), 1e5, np.float32))))(x)["out"]
    assert set(np.unique(huge)) == {0.0, 1.0}  # beyond 65504 the emulation saturates to inf


def test_weight_beyond_fp16_range_is_an_error():
    with pytest.raises(Fp16Error, match="weight 'w' holds 1e\\+05, beyond float16"):
        convert_to_fp16(_graph(np.full((1, 1, 1, 1), 1e5, np.float32)))


def _outs(boxes, scores, mask):
    det = np.concatenate([boxes, scores[..., None], np.zeros_like(scores)[..., None]], -1)
    return {"det": det[None].astype(np.float32), "drivable": mask[None], "lane": mask[None]}


def test_agreement_numbers_and_loud_failure():
    boxes = np.array([[0, 0, 10, 10], [20, 20, 40, 40]], np.float32)
    scores = np.array([0.9, 0.8], np.float32)
    mask = np.zeros((4, 4), np.uint8)
    a = _outs(boxes, scores, mask)
    mask16 = mask.copy()
    mask16[0, 0] = 1  # 1 of 16 pixels flips
    b = _outs(boxes + np.array([[0, 0, 0, 1], [0, 0, 0, 0]], np.float32), scores - 0.01, mask16)
    cases = [("c", np.zeros((1, 3, 4, 4), np.float32))]
    rep = fp16_agreement(
        lambda x: a, lambda x: b, cases, DeploySpec(det_decoder="yolop_anchor"), Fp16Thresholds()
    )
    assert rep.mask_agreement_pct == {"drivable": 93.75, "lane": 93.75}
    assert rep.mean_iou == pytest.approx((100 / 110 + 1) / 2) and rep.min_iou == pytest.approx(
        100 / 110
    )
    assert rep.score_max_delta == pytest.approx(0.01, abs=1e-6) and rep.boxes_compared == 2
    assert rep.failures == [  # mean IoU 0.9545 passes the 0.95 default
        "drivable mask agreement 93.750% < 99.0%",
        "lane mask agreement 93.750% < 99.0%",
    ]
    with pytest.raises(Fp16Error, match="FP16 ONNX disagrees with FP32: drivable mask agreement"):
        require_fp16_agreement(rep)
    ok = fp16_agreement(
        lambda x: a, lambda x: a, cases, DeploySpec(det_decoder="yolop_anchor"), Fp16Thresholds()
    )
    assert ok.ok and ok.mean_iou == 1.0 and ok.score_max_delta == 0.0
