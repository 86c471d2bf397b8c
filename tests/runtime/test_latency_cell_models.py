"""Cell models of the latency table (torch-free): the one-dimensional (additive, separable) and
two-dimensional (bilinear) models against known costs, the held-out cells that choose between
them, and the channel-step test that finds a backend's block."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.latency_model.cell_models import (
    cell_ms,
    choose_model,
    detect_block,
    holdout_pairs,
    model_errors,
    step_widths,
)
from runtime.latency_model.table import Anchor, LatencyTable, LayerInfo, ProbeTimes, TableKey

GI, GO = [16, 32, 48, 64], [16, 32, 48, 64]
KEY = TableKey("onnxruntime", "cpu", "fp32", (64, 64), 1, "m")


def grid(f):
    return np.array([[f(ci, co) for co in GO] for ci in GI], dtype=float)


@pytest.mark.parametrize(
    ("f", "exact"),
    [
        (lambda ci, co: 1.0 + 0.01 * ci + 0.02 * co, {"additive", "bilinear"}),
        (lambda ci, co: 0.001 * ci * co, {"separable", "bilinear"}),
        (lambda ci, co: 0.3 + 0.001 * ci * co, {"bilinear"}),
    ],
)
def test_each_model_is_exact_for_the_costs_it_assumes(f, exact):
    ms = grid(f)
    for model in ("additive", "separable", "bilinear"):
        err = max(
            abs(cell_ms(model, GI, GO, ms, ci, co) - f(ci, co)) for ci, co in [(24, 40), (40, 24)]
        )
        assert (err < 1e-9) == (model in exact), (model, err)


def test_holdout_pairs_lie_on_the_step_and_off_the_grid():
    pairs = holdout_pairs([16, 64, 128, 192, 256], [16, 32, 64, 96, 128], 16)
    assert pairs == [[96, 112], [176, 80]]  # low-in/high-out and high-in/low-out
    for ci, co in pairs:
        assert ci % 16 == 0 and co % 16 == 0
        assert ci not in (16, 64, 128, 192, 256) or co not in (16, 32, 64, 96, 128)
    assert holdout_pairs([16], [16, 32, 48], 16) == []  # one side fixed: the models agree
    assert holdout_pairs([16, 32], [16, 32], 16) == []  # nothing between the grid's widths


def test_the_chosen_model_is_the_one_with_the_least_held_out_error():
    """A conv whose time is a product of its widths plus a fixed cost: only the bilinear model
    is exact, the additive one is far off on held-out cells, and the table picks bilinear."""
    f = lambda ci, co: 0.3 + 0.001 * ci * co  # noqa: E731
    p = ProbeTimes(GI, GO, grid(f), [(24, 56, f(24, 56)), (56, 24, f(56, 24))])
    layers = {"a": LayerInfo("p0", 64, 64, 10)}
    anchors = [Anchor("full", 10.0), Anchor("thin", 6.0, {"a": (32, 32)})]
    mixed = [Anchor("mixed", 7.0, {"a": (48, 32)})]
    table = LatencyTable(KEY, layers, {"p0": p}, anchors, holdout_anchors=mixed)
    check = table.cell_model
    assert check["model"] == "bilinear" and check["holdout_cells"] == 2
    errors = check["cell_error"]
    assert errors["bilinear"]["abs"] == pytest.approx(0.0, abs=1e-6)
    assert errors["additive"]["abs"] > 0.1 and errors["additive"]["signed"] < 0
    assert set(check["network_error"]) == {"additive", "separable", "bilinear"}
    # the table prices with the chosen model; the saved file records the choice and errors
    assert table.layer_ms("a", 24, 56) == pytest.approx(f(24, 56))
    again = LatencyTable.from_dict(table.to_dict())
    assert again.cell_model == check and again.holdout_anchors[0].name == "mixed"
    # a table without held-out cells keeps the bilinear model and says why
    plain = LatencyTable(KEY, layers, {"p0": ProbeTimes(GI, GO, grid(f))}, anchors)
    assert (
        plain.cell_model["model"] == "bilinear" and "no held-out" in plain.cell_model["chosen_by"]
    )


def test_model_errors_are_time_weighted():
    cells = [("p", 1, 1, 1.0, 1), ("p", 2, 2, 3.0, 1)]
    errs = model_errors(cells, {"additive": lambda p, ci, co: 2.0})
    assert errs["additive"] == {"abs": pytest.approx(2 / 4), "signed": pytest.approx(0.0)}
    assert choose_model({}) == "bilinear"
    tie = {m: {"abs": 0.1, "signed": 0.0} for m in ("additive", "separable", "bilinear")}
    assert choose_model(tie) == "additive"  # ties go to the simpler model


def stepped(block, base=0.1, per=0.01):
    return {w: base + per * (-(-w // block) * block) for w in step_widths(96)}


@pytest.mark.parametrize("block", [8, 16, 32])
def test_detect_block_finds_the_step_of_a_blocked_backend(block):
    found, scores = detect_block(stepped(block))
    assert found == block, scores


def test_detect_block_on_a_smooth_backend_and_on_too_few_widths():
    smooth = {w: 0.1 + 0.01 * w for w in step_widths(96)}
    assert detect_block(smooth)[0] == 1  # measured: no channel steps
    assert detect_block({16: 1.0, 32: 2.0})[0] is None  # cannot tell
    # the numbers measured on AVX-512 ONNX Runtime (docs/LATENCY.md, a 48-channel 3x3 conv)
    ort = {16: 0.52, 24: 0.99, 32: 1.07, 40: 1.60, 48: 1.53, 56: 2.1, 64: 2.05}
    assert detect_block(ort)[0] == 16
