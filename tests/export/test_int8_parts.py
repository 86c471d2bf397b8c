"""INT8 building blocks against references: per-channel weight quantisation, the Q/DQ graph
(run by ONNX Runtime vs a numpy emulation of the same arithmetic), calibration methods on known
distributions, layer groups, and the guard's search on a scorer whose answer is known."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from export.checks.ort import OrtModel
from export.int8.calibrate import (
    HIST_BINS,
    CalibrationImages,
    _entropy_amax,
    _hist_into,
    _percentile_amax,
    collect_ranges,
    with_outputs,
)
from export.int8.cost import conv_flops
from export.int8.guard import Int8Search, layer_groups, over_budget
from export.int8.qdq import QuantLayer, insert_qdq, quantize_weights


def _two_conv_model(rng: np.random.Generator) -> onnx.ModelProto:
    """images [N,3,8,8] -> Conv(4) -> Relu -> Conv(2) -> out."""
    w1 = numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(rng.normal(size=4).astype(np.float32), "b1")
    w2 = numpy_helper.from_array(rng.normal(size=(2, 4, 1, 1)).astype(np.float32), "w2")
    nodes = [
        helper.make_node(
            "Conv", ["images", "w1", "b1"], ["c1"], name="/a/conv1/Conv", pads=[1] * 4
        ),
        helper.make_node("Relu", ["c1"], ["r1"], name="/a/relu/Relu"),
        helper.make_node("Conv", ["r1", "w2"], ["out"], name="/b/conv2/Conv"),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 2, 8, 8])],
        [w1, b1, w2],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _fake_quant(x: np.ndarray, scale: np.ndarray | float) -> np.ndarray:
    """ONNX QuantizeLinear (round half to even, saturate to int8) then DequantizeLinear."""
    return np.clip(np.rint(x / scale), -128, 127) * scale


def _conv_nchw(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, pad: int) -> np.ndarray:
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out = np.zeros((n, o, h + 2 * pad - kh + 1, wd + 2 * pad - kw + 1), np.float64)
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i : i + out.shape[2], j : j + out.shape[3]]
            out += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
    return out + (0 if b is None else b[None, :, None, None])


def test_weights_per_output_channel_symmetric_int8():
    w = np.stack([np.linspace(-1, 1, 27), np.linspace(-100, 50, 27)]).reshape(2, 3, 3, 3)
    q, scale = quantize_weights(w.astype(np.float32))
    assert q.dtype == np.int8 and np.abs(q).max() == 127
    np.testing.assert_allclose(scale, [1 / 127, 100 / 127], rtol=1e-6)
    err = np.abs(q * scale.reshape(-1, 1, 1, 1) - w)
    assert np.all(err.max(axis=(1, 2, 3)) <= scale / 2 * (1 + 1e-5))  # half a step, at most


def test_qdq_graph_computes_what_int8_arithmetic_does():
    rng = np.random.default_rng(0)
    model = _two_conv_model(rng)
    x = rng.normal(size=(2, 3, 8, 8)).astype(np.float32)
    calib = CalibrationImages(x, "test")
    amax = collect_ranges(model, ["images", "r1"], calib, "max", batch=2, progress=False)
    q, layers = insert_qdq(model, amax)
    onnx.checker.check_model(q)
    assert [lay.node for lay in layers] == ["/a/conv1/Conv", "/b/conv2/Conv"]
    ops = [n.op_type for n in q.graph.node]
    assert ops.count("QuantizeLinear") == 2 and ops.count("DequantizeLinear") == 4
    w_dq = [n for n in q.graph.node if n.name.endswith("WeightDequantize")]
    assert all(a.name == "axis" and a.i == 0 for n in w_dq for a in n.attribute)
    # numpy reference: fake-quantised activations and per-channel weights, float conv
    w1, b1 = (numpy_helper.to_array(i) for i in model.graph.initializer[:2])
    w2 = numpy_helper.to_array(model.graph.initializer[2])
    qw1, s1 = quantize_weights(w1)
    qw2, s2 = quantize_weights(w2)
    h = _conv_nchw(_fake_quant(x, amax["images"] / 127), qw1 * s1.reshape(-1, 1, 1, 1), b1, 1)
    h = np.maximum(h, 0)
    ref = _conv_nchw(
        _fake_quant(h.astype(np.float32), amax["r1"] / 127), qw2 * s2.reshape(-1, 1, 1, 1), None, 0
    )
    got = OrtModel(q)(x)["out"]
    # float32 (ORT) vs float64 (here) can round a value on a .5 boundary of the second
    # quantiser the other way: at most one step of one input channel per output value
    step = amax["r1"] / 127 * np.abs(qw2 * s2.reshape(-1, 1, 1, 1)).max()
    err = np.abs(got - ref)
    assert err.max() <= step * 1.01
    assert np.mean(err < 1e-4 * np.abs(ref).max()) > 0.97
    fp32 = OrtModel(model)(x)["out"]
    assert 0 < np.abs(got - fp32).max() < 0.05 * np.abs(fp32).max()  # quantised, and close


def test_excluded_layer_keeps_float_inputs():
    model = _two_conv_model(np.random.default_rng(1))
    q, layers = insert_qdq(model, {"images": 1.0, "r1": 1.0}, exclude=["/b/conv2/Conv"])
    assert [lay.node for lay in layers] == ["/a/conv1/Conv"]
    conv2 = next(n for n in q.graph.node if n.name == "/b/conv2/Conv")
    assert list(conv2.input) == ["r1", "w2"]
    assert {i.name for i in q.graph.initializer} >= {"w2"}


def test_a_missing_range_is_named():
    with pytest.raises(KeyError, match="r1"):
        insert_qdq(_two_conv_model(np.random.default_rng(2)), {"images": 1.0})


def test_max_calibration_is_the_largest_magnitude_seen():
    model = _two_conv_model(np.random.default_rng(3))
    images = np.random.default_rng(4).normal(size=(6, 3, 8, 8)).astype(np.float32)
    amax = collect_ranges(
        model, ["images", "r1"], CalibrationImages(images, "t"), "max", batch=4, progress=False
    )
    assert amax["images"] == pytest.approx(float(np.abs(images).max()))
    r1 = OrtModel(with_outputs(model, ["r1"]))(images)["r1"]  # an inner tensor, read out
    assert amax["r1"] == pytest.approx(float(r1.max())) and amax["r1"] > 0


def test_percentile_and_entropy_clip_a_long_tail_but_not_a_uniform_range():
    rng = np.random.default_rng(5)
    tail = np.abs(rng.standard_cauchy(200_000))
    top = float(tail.max())
    hist = np.zeros(HIST_BINS)
    _hist_into(hist, top, tail)
    p = _percentile_amax(hist, top, 99.0)
    assert abs(p - np.percentile(tail, 99.0)) <= top / HIST_BINS + 1e-9
    assert _entropy_amax(hist, top) < 0.5 * top
    flat = rng.uniform(0, 4, 200_000)
    hist = np.zeros(HIST_BINS)
    _hist_into(hist, 4.0, flat)
    assert _entropy_amax(hist, 4.0) > 3.6


def test_conv_flops_count_macs_times_two():
    flops = conv_flops(_two_conv_model(np.random.default_rng(6)))
    assert flops == {"/a/conv1/Conv": 2.0 * 4 * 3 * 9 * 64, "/b/conv2/Conv": 2.0 * 2 * 4 * 64}


def _layers(names: list[str]) -> list[QuantLayer]:
    return [QuantLayer(n, "Conv", "x", "w") for n in names]


def test_groups_follow_the_module_scope_and_split_big_blocks():
    names = [f"/model/model.{i}/conv/Conv" for i in range(3)]
    names += [f"/model/model.9/m/m.{j}/cv{k}/conv/Conv" for j in range(3) for k in (1, 2)]
    groups = layer_groups(_layers(names), max_size=4)
    assert groups["model.0"] == ["/model/model.0/conv/Conv"]
    assert sorted(g for g in groups if g.startswith("model.9")) == [
        "model.9/m/m.0",
        "model.9/m/m.1",
        "model.9/m/m.2",
    ]
    assert sum(len(v) for v in groups.values()) == len(names)


def test_guard_falls_back_the_harmful_group_only():
    """A scorer whose lane IoU collapses while group 'lane' is quantised: the search must keep
    exactly that group out of INT8 (and re-quantise the harmless one it may have tried)."""
    model = _two_conv_model(np.random.default_rng(7))
    groups = {"det": ["/a/conv1/Conv"], "lane": ["/b/conv2/Conv"]}

    def scorer(m: onnx.ModelProto) -> dict:
        quantised = {
            n.name for n in m.graph.node if n.op_type == "Conv" and n.input[0].endswith("_dq")
        }
        lane = 0.50 - (0.20 if "/b/conv2/Conv" in quantised else 0.0)
        det = 0.60 - (0.004 if "/a/conv1/Conv" in quantised else 0.0)
        return {"lane_iou": lane, "det_map50": det}

    search = Int8Search(
        model,
        {"images": 1.0, "r1": 1.0},
        groups,
        scorer,
        {"lane_iou": 1.0, "det_map50": 1.0},
        progress=False,
    )
    res = search.run()
    assert res.fallback == ["lane"]
    assert res.deltas == pytest.approx({"lane_iou": 0.0, "det_map50": -0.4})
    assert res.all_int8_deltas["lane_iou"] == pytest.approx(-20.0)
    assert res.sensitivity["lane"]["lane_iou"] == pytest.approx(20.0)
    assert "lane_iou" in res.reasons["lane"]
    assert [lay.node for lay in res.layers] == ["/a/conv1/Conv"]


def _conv_chain(n: int) -> onnx.ModelProto:
    """images [N,4,4,4] -> n 1x1 convs /gK/conv/Conv (4 -> 4 channels) -> out."""
    rng = np.random.default_rng(11)
    inits = [
        numpy_helper.from_array(rng.normal(size=(4, 4, 1, 1)).astype(np.float32), f"w{k}")
        for k in range(n)
    ]
    names = ["images", *[f"c{k}" for k in range(n - 1)], "out"]
    nodes = [
        helper.make_node("Conv", [names[k], f"w{k}"], [names[k + 1]], name=f"/g{k}/conv/Conv")
        for k in range(n)
    ]
    g = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 4, 4, 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 4, 4, 4])],
        inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _quantised(m: onnx.ModelProto) -> set[str]:
    return {n.name for n in m.graph.node if n.op_type == "Conv" and n.input[0].endswith("_dq")}


def test_proxy_ranking_keeps_the_most_int8_flops_within_budget():
    """Lane points lost per quantised group g0..g3: 1.5, 1.5, 1.0, 0.0 (additive), FLOPs shares
    0.6, 0.2, 0.1, 0.1, lane budget 1 point. Ranked by proxy harm per FLOP (g2, g1, g0, g3), the
    shortest prefix within budget is g2 g1 g0; re-quantising the most FLOPs first, only g2
    comes back: INT8 {g2, g3}, the best choice there is (the next best loses 1.5 points)."""
    loss = {"/g0/conv/Conv": 1.5, "/g1/conv/Conv": 1.5, "/g2/conv/Conv": 1.0, "/g3/conv/Conv": 0.0}
    groups = {f"g{k}": [f"/g{k}/conv/Conv"] for k in range(4)}
    calls = []

    def scorer(m: onnx.ModelProto) -> dict:
        return {"lane_iou": 0.5 - sum(loss[n] for n in _quantised(m)) / 100}

    def proxy(m: onnx.ModelProto) -> dict:
        calls.append(sorted(_quantised(m)))
        return {"lane_iou": sum(loss[n] for n in _quantised(m)) / 100}

    amax = {"images": 1.0, "c0": 1.0, "c1": 1.0, "c2": 1.0}
    cost = {"g0": 0.6, "g1": 0.2, "g2": 0.1, "g3": 0.1}
    search = Int8Search(
        _conv_chain(4),
        amax,
        groups,
        scorer,
        {"lane_iou": 1.0},
        progress=False,
        proxy=proxy,
        cost=cost,
    )
    res = search.run()
    assert calls == [[f"/g{k}/conv/Conv"] for k in range(4)]  # each group alone in INT8
    assert res.ranking == "proxy"
    assert res.sensitivity["g2"]["lane_iou"] == pytest.approx(0.01)
    assert res.fallback == ["g1", "g0"]
    assert res.deltas["lane_iou"] == pytest.approx(-1.0)
    assert sorted(q.node for q in res.layers) == ["/g2/conv/Conv", "/g3/conv/Conv"]
    # all-INT8, two bisection steps, three re-quantise trials of which one (g2 g1) was a step
    assert res.scored == 5
    steps = [(s.action, s.groups, s.ok) for s in res.steps if s.action != "sensitivity"]
    assert steps == [
        ("all", 0, False),
        ("fallback", 2, False),
        ("fallback", 3, True),
        ("requantize", 2, False),
        ("requantize", 2, False),
        ("requantize", 2, True),
    ]
    assert "g1" in res.reasons and "% of the conv FLOPs" in res.reasons["g1"]


def test_over_budget_names_only_the_metrics_past_it():
    assert over_budget({"a": -0.4, "b": -2.0, "c": 3.0}, {"a": 0.5, "b": 1.0, "c": 0.1}) == {
        "b": pytest.approx(1.0)
    }


def test_mse_calibration_picks_the_range_with_the_least_quantisation_error():
    from export.int8.calibrate import _mse_amax

    rng = np.random.default_rng(8)
    x = np.abs(np.append(rng.normal(size=200_000), [1000.0, 800.0]))  # a bulk and two outliers
    hist = np.zeros(HIST_BINS)
    _hist_into(hist, 1000.0, x)
    amax = _mse_amax(hist, 1000.0)

    def mse(a: float) -> float:  # the true error of symmetric int8 at range a, on the samples
        return float(np.mean((np.clip(np.rint(x / (a / 127)), -127, 127) * (a / 127) - x) ** 2))

    assert all(mse(amax) <= 1.05 * mse(a) for a in (1000.0, 500.0, 100.0, 10.0, 4.0))
    flat = rng.uniform(0, 4, 200_000)
    hist = np.zeros(HIST_BINS)
    _hist_into(hist, 4.0, flat)
    assert _mse_amax(hist, 4.0) > 3.8  # nothing to gain by clipping a uniform range


def test_auto_calibration_prefers_a_candidate_that_needs_no_search():
    """Candidate A disagrees least with FP32 but is over budget all-INT8; B is within budget:
    B is kept. With no candidate within budget, the least disagreement (A) is kept."""
    from export.int8.calibrate import Candidate
    from export.int8.stage import _choose_calibration

    model = _two_conv_model(np.random.default_rng(8))
    ranges = [{"images": 1.0, "r1": 1.0}, {"images": 2.0, "r1": 2.0}]  # A, B by their scale

    def which(m: onnx.ModelProto) -> str:
        scale = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}["images_act_scale"]
        return "A" if np.isclose(scale, 1.0 / 127) else "B"

    def proxy(m: onnx.ModelProto) -> dict:
        return {"lane_iou": {"A": 0.1, "B": 0.3}[which(m)]}

    def scorer_with(lane: dict) -> Callable[[onnx.ModelProto], dict]:
        return lambda m: {"lane_iou": lane[which(m)]}

    def both(scorer: Callable[[onnx.ModelProto], dict]) -> Callable:
        return lambda m: (scorer(m), proxy(m))

    cands = (Candidate("max"), Candidate("percentile", 99.9))
    ref, budgets = {"lane_iou": 0.5}, {"lane_iou": 1.0}
    scorer = scorer_with({"A": 0.48, "B": 0.495})  # A -2 points, B -0.5 points
    chosen, trials, _ = _choose_calibration(model, cands, ranges, [], both(scorer), ref, budgets)
    assert chosen == 1 and [t["within_budget"] for t in trials] == [False, True]
    assert trials[0]["relative"] == pytest.approx(0.5) and trials[1]["relative"] == pytest.approx(
        1.5
    )
    scorer = scorer_with({"A": 0.48, "B": 0.47})  # both over budget
    chosen, _, _ = _choose_calibration(model, cands, ranges, [], both(scorer), ref, budgets)
    assert chosen == 0
