"""The latency table (torch-free): interpolation, the whole-model fit, calibration by measured
plans, key checks, and file errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from runtime.latency_model.table import (
    Anchor,
    LatencyTable,
    LatencyTableError,
    LatencyTableMismatchError,
    LayerInfo,
    ProbeTimes,
    TableKey,
    grid_widths,
    load_table,
)

KEY = TableKey(
    "onnxruntime", "AMD EPYC 7B13", "fp32", (384, 640), 1, "abc123", (("onnxruntime", "1.32.0"),), 1
)


def bilinear(ci, co):
    return 0.5 + 0.01 * ci + 0.02 * co + 0.001 * ci * co


def probe(grid_in, grid_out, f=bilinear):
    ms = np.array([[f(ci, co) for co in grid_out] for ci in grid_in], dtype=float)
    return ProbeTimes(list(grid_in), list(grid_out), ms)


def make_table(anchors=None):
    layers = {
        "a": LayerInfo("p0", 16, 32, 100, vary_in=False, vary_out=True),
        "b": LayerInfo("p1", 32, 64, 25),
    }
    probes = {"p0": probe([16], [8, 16, 24, 32]), "p1": probe([8, 16, 32], [8, 32, 64])}
    anchors = anchors or [
        Anchor("full", 100.0),
        Anchor("thin", 60.0, {"a": (16, 16), "b": (16, 32)}),
    ]
    return LatencyTable(KEY, layers, probes, anchors)


def test_interpolation_is_exact_for_bilinear_costs_and_extrapolates_below_grid():
    p = probe([8, 16, 32], [8, 32, 64])
    for ci, co in [(8, 8), (12, 20), (32, 64), (20, 48), (31, 9)]:
        assert p.at(ci, co) == pytest.approx(bilinear(ci, co))
    # below the smallest probe the nearest cell's plane is extended (still exact for bilinear)
    assert p.at(4, 4) == pytest.approx(bilinear(4, 4))
    # never negative
    steep = ProbeTimes([8, 16], [8], np.array([[1.0], [10.0]]))
    assert steep.at(0, 8) == 0.0


def test_fit_reproduces_both_anchors_and_is_hand_computable():
    t = make_table()
    s_full = bilinear(16, 32) + bilinear(32, 64)
    s_thin = bilinear(16, 16) + bilinear(16, 32)
    v_full, v_thin = 32 * 100 + 64 * 25, 16 * 100 + 32 * 25
    slope = ((60 - s_thin) - (100 - s_full)) / (v_thin - v_full)
    assert t.per_volume_ms == pytest.approx(slope)
    assert t.fixed_ms == pytest.approx(100 - s_full - slope * v_full)
    assert t.predict() == pytest.approx(100.0)
    assert t.predict({"a": (16, 16), "b": (16, 32)}) == pytest.approx(60.0)
    # a layer whose input is not prunable is priced at its full input width
    assert t.layer_ms("a", 4, 24) == pytest.approx(bilinear(16, 24))
    assert t.savings_scale == 1.0


def test_measured_plans_calibrate_the_savings_scale():
    t = make_table()
    plan = {"a": (16, 24), "b": (24, 48)}
    structural = t.predict(plan)
    # the plan really saves only half of what the structure predicts
    measured = 100.0 - 0.5 * (100.0 - structural)
    t.add_anchor(Anchor("plan1", measured, plan))
    assert t.savings_scale == pytest.approx(0.5)
    assert t.predict(plan) == pytest.approx(measured)
    assert t.predict() == pytest.approx(100.0)  # the unpruned model stays the yardstick


def test_key_mismatches_name_every_difference():
    diffs = KEY.mismatches(backend="tensorrt", precision="fp16", input_hw=(192, 320), batch=4)
    text = "; ".join(diffs)
    for part in (
        "backend: table has onnxruntime, expected tensorrt",
        "precision",
        "input_hw",
        "batch",
    ):
        assert part in text
    assert KEY.mismatches(device="epyc", backend="onnxruntime", input_hw=[384, 640], batch=1) == []
    assert KEY.mismatches(device="Orin") == ["device: table has AMD EPYC 7B13, expected Orin"]


def test_save_load_roundtrip(tmp_path):
    t = make_table()
    t.add_anchor(Anchor("plan1", 80.0, {"b": (24, 48)}))
    t.save(tmp_path / "t.json")
    back = load_table(tmp_path / "t.json")
    assert back.key == KEY
    assert back.predict({"b": (24, 48)}) == pytest.approx(t.predict({"b": (24, 48)}))
    assert back.savings_scale == pytest.approx(t.savings_scale)


def test_check_layers_refuses_a_table_of_another_model():
    t = make_table()
    t.check_layers({"a": (16, 32), "b": (32, 64)})
    with pytest.raises(LatencyTableMismatchError, match="no timing for layer 'c'"):
        t.check_layers({"c": (3, 8)})
    with pytest.raises(LatencyTableMismatchError, match="32->48 channels in this model"):
        t.check_layers({"b": (32, 48)})


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\x00\xff not json", "is not JSON"),
        (json.dumps({"format": "something"}).encode(), "not an mtc latency table"),
        (json.dumps({"format": "mtc-latency-table", "version": 99}).encode(), "table version 99"),
        (
            json.dumps({"format": "mtc-latency-table", "version": 1, "key": {}}).encode(),
            "malformed",
        ),
    ],
)
def test_bad_files_give_named_errors(tmp_path, content, message):
    p = tmp_path / "t.json"
    p.write_bytes(content)
    with pytest.raises(LatencyTableError, match=message):
        load_table(p)


def test_missing_probe_or_anchor_is_an_incomplete_table(tmp_path):
    d = make_table().to_dict()
    del d["probes"]["p1"]
    (tmp_path / "t.json").write_text(json.dumps(d))
    with pytest.raises(LatencyTableError, match="lacks the timings of probe"):
        load_table(tmp_path / "t.json")
    with pytest.raises(LatencyTableError, match="is missing"):
        load_table(tmp_path / "nope.json")
    with pytest.raises(LatencyTableError, match="is a folder"):
        load_table(tmp_path)


def test_grid_widths_snap_and_include_the_floor():
    assert grid_widths(64, (0.25, 0.5, 0.75), 8, 8) == [8, 16, 32, 48, 64]
    assert grid_widths(18, (0.25, 0.5, 0.75), 8, 8) == [8, 16, 18]
    assert grid_widths(4, (0.5,), 8, 8) == [4]


def test_nchwc_block_follows_the_cpu_flags():
    from runtime.hostinfo import cpu_flags
    from runtime.latency_model.onnxruntime_timer import nchwc_block

    x86 = "processor : 0\nflags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw\n"
    assert cpu_flags(x86) >= {"avx2", "avx512f"}
    assert nchwc_block(cpu_flags(x86)) == 16
    assert nchwc_block(cpu_flags(x86.replace(" avx512f avx512bw", ""))) == 8
    arm = "processor : 0\nFeatures\t: fp asimd evtstrm aes crc32\n"
    assert nchwc_block(cpu_flags(arm)) is None and "asimd" in cpu_flags(arm)
    assert cpu_flags("") == frozenset()
