"""The latency target end to end: probe bundle export, measurement (a deterministic analytic timer
where exactness is asserted, real ONNX Runtime for the round trip), the HALP-style planner with
its calibration loop, and every bad input as a named error before any pruning work."""

from __future__ import annotations

import copy
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper, shape_inference

from compressor import build_model, save_checkpoint
from compressor.checkpoint import default_preprocess
from compressor.latency import export_probe_bundle
from compressor.latency.onnx_io import export_onnx
from compressor.models.registry import get_spec
from compressor.pruning import ImpossibleTargetError, PruneConfig, PruneConfigError, prune
from runtime.latency_model.bundle import load_bundle
from runtime.latency_model.measure import (
    MeasureConfig,
    MeasureInterrupted,
    extra_cells,
    measure_bundle,
)
from runtime.latency_model.table import LatencyTableMismatchError, load_table
from runtime.latency_model.timers import ProbeTimer, Repeat

HW = (64, 128)
PROTECTED = get_spec("yolop").protected
ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("one_thread")


def analytic_ms(model: onnx.ModelProto, whole: bool, block: int = 1) -> float:
    """A deterministic 'latency': per conv 0.01 ms + 1e-6 ms per MAC (bilinear in the widths);
    whole models add 2 ms and 1e-5 ms per conv output element (the part the fit must find).
    block > 1: output channels are computed in blocks (a width costs the next multiple up)."""
    m = shape_inference.infer_shapes(model)
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in m.graph.value_info
    }
    shapes.update(
        {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in m.graph.output}
    )
    inits = {i.name: i for i in m.graph.initializer}
    alias = {n.output[0]: n.input[0] for n in m.graph.node if n.op_type == "Identity"}
    total, volume = 0.0, 0
    for node in m.graph.node:
        if node.op_type != "Conv":
            continue
        w = node.input[1]
        while w in alias:
            w = alias[w]
        cout, cin_g, kh, kw = numpy_helper.to_array(inits[w]).shape
        cout = -(-cout // block) * block
        out = shapes[node.output[0]]
        total += 0.01 + 1e-6 * cout * cin_g * kh * kw * out[2] * out[3]
        volume += cout * out[2] * out[3]
    return total + (2.0 + 1e-5 * volume if whole else 0.0)


class AnalyticTimer(ProbeTimer):
    name = "analytic"

    def __init__(self, interrupt_after: int | None = None, block: int = 1):
        super().__init__("fp32", None)
        self.calls = 0
        self.interrupt_after = interrupt_after
        self.block = block  # like TensorRT here: the timer knows no channel block

    def device(self) -> str:
        return "Analytic CPU"

    def versions(self) -> dict[str, str]:
        return {"analytic": "1"}

    def prepare(self, onnx_bytes, input_name, input_shape):
        self.calls += 1
        if self.interrupt_after is not None and self.calls > self.interrupt_after:
            raise KeyboardInterrupt
        ms = analytic_ms(onnx.load_from_string(onnx_bytes), input_name != "x", self.block)
        return lambda: ms


FAST = MeasureConfig(repeat=Repeat(0, 1, 0.0, 1), anchor_repeat=Repeat(0, 1, 0.0, 1))


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    return build_model("yolop", width=0.25, depth=0.33).eval()


@pytest.fixture(scope="module")
def bundle_dir(teacher, tmp_path_factory):
    d = tmp_path_factory.mktemp("bundle")
    export_probe_bundle(teacher, d, HW, 1, protected=PROTECTED, model_name="yolop")
    return d


@pytest.fixture(scope="module")
def table(bundle_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("table") / "t.json"
    return measure_bundle(load_bundle(bundle_dir), AnalyticTimer(), out, FAST)


def prune_latency(model, cfg, table, measure=None):
    """prune() of a YOLOP with its protected outputs, against `table`, on one example input."""
    return prune(
        model,
        None,
        [],
        cfg,
        torch.zeros(1, 3, *HW),
        PROTECTED,
        progress=False,
        latency_table=table,
        measure=measure,
    )


def widths_of(model, table):
    mods = dict(model.named_modules())
    return {n: (mods[n].in_channels, mods[n].out_channels) for n in table.layers}


def test_bundle_covers_every_conv_and_fixes_prediction_layers(teacher, bundle_dir):
    b = load_bundle(bundle_dir)
    convs = [n for n, m in teacher.named_modules() if isinstance(m, torch.nn.Conv2d)]
    assert sorted(b.layers) == sorted(convs)
    assert b.layers["model.24.m.0"]["vary_out"] is False  # detect output: anchor layout fixed
    assert b.layers["model.33.conv"]["vary_out"] is False  # drivable logits
    assert b.layers["model.1.conv"]["vary_out"] and b.layers["model.1.conv"]["vary_in"]
    assert b.layers["model.0.conv.conv"]["vary_in"] is False  # the image's (Focus) channels
    assert len(list((bundle_dir / "probes").glob("*.onnx"))) == len(b.probes)
    assert {a.name: a.role for a in b.anchors} == {"full": "fit", "thin": "fit", "mixed": "holdout"}
    # identical layers share one probe
    assert len(b.probes) < len(b.layers)


def test_sliced_probe_computes_the_first_channels_of_the_full_probe(bundle_dir):
    import onnxruntime as ort

    b = load_bundle(bundle_dir)
    spec = next(p for p in b.probes.values() if len(p.grid_in) > 2 and len(p.grid_out) > 2)
    hw = next(ly["in_hw"] for ly in b.layers.values() if ly["probe"] == spec.id)
    ci, co = spec.grid_in[1], spec.grid_out[1]
    x = np.random.default_rng(0).standard_normal((1, spec.cin, *hw)).astype(np.float32)
    x[:, ci:] = 0
    full = ort.InferenceSession(b.probe_bytes(spec, spec.cin, spec.cout)).run(None, {"x": x})[0]
    small = ort.InferenceSession(b.probe_bytes(spec, ci, co)).run(None, {"x": x[:, :ci]})[0]
    assert small.shape[1] == co
    np.testing.assert_allclose(small, full[:, :co], rtol=1e-5, atol=1e-5)


def test_prediction_is_exact_for_an_analytic_backend(teacher, table):
    assert table.key.backend == "analytic" and table.key.input_hw == HW
    # the fit finds the hidden whole-model terms exactly
    assert table.fixed_ms == pytest.approx(2.0, abs=1e-6)
    assert table.per_volume_ms == pytest.approx(1e-5, rel=1e-6)
    student = copy.deepcopy(teacher)
    cfg = PruneConfig(ratio=0.3, target="latency", importance="l1")
    res = prune_latency(student, cfg, table)
    measured = analytic_ms(export_onnx(student, HW, 1), whole=True)
    predicted = res.report.latency["predicted_after_ms"]
    assert predicted == pytest.approx(measured, rel=1e-6)
    assert predicted <= 0.7 * table.predict() * (1 + 1e-9)
    assert res.report.achieved_ratio >= 0.3 - 1e-9
    # widths: multiples of round_to (or untouched), protected outputs unchanged
    before, after = widths_of(teacher, table), widths_of(student, table)
    for n, (_ci, co) in after.items():
        assert co == before[n][1] or co % 8 == 0, (n, co)
    for n in PROTECTED:
        conv = n if n in after else f"{n}.conv"
        assert after[conv][1] == before[conv][1]
    top = res.report.latency["top_savings"]
    assert top and top == sorted(top, key=lambda r: -r["saved_ms"])


def test_safe_rule_and_min_width_hold_under_the_latency_target(teacher, table):
    student = copy.deepcopy(teacher)
    cfg = PruneConfig(ratio=0.3, target="latency", importance="l1", min_width=16, round_to=16)
    prune_latency(student, cfg, table)
    before, after = widths_of(teacher, table), widths_of(student, table)
    changed = [n for n in after if after[n][1] != before[n][1]]
    assert changed
    assert all(after[n][1] >= 16 and after[n][1] % 16 == 0 for n in changed)


def test_unreachable_ratio_says_how_far_it_can_go(teacher, table):
    student = copy.deepcopy(teacher)
    params = sum(p.numel() for p in student.parameters())
    cfg = PruneConfig(ratio=0.95, target="latency", importance="l1")
    with pytest.raises(ImpossibleTargetError, match=r"at most \d+\.\d% can be removed"):
        prune_latency(student, cfg, table)
    assert sum(p.numel() for p in student.parameters()) == params  # nothing pruned


def test_table_of_another_model_or_size_is_refused_before_pruning(table):
    other = build_model("yolop", width=0.5, depth=0.33)
    params = sum(p.numel() for p in other.parameters())
    cfg = PruneConfig(ratio=0.2, target="latency", importance="l1")
    with pytest.raises(LatencyTableMismatchError, match="channels in this model"):
        prune_latency(other, cfg, table)
    assert sum(p.numel() for p in other.parameters()) == params
    with pytest.raises(PruneConfigError, match="needs a latency table"):
        prune(other, None, [], cfg, torch.zeros(1, 3, *HW), PROTECTED, progress=False)


def test_measured_plans_recalibrate_and_replan(teacher, table):
    """A backend where plans save only 60 % of what the structure predicts: the planner measures
    its plan, learns the factor and cuts deeper until the measurement meets the target."""
    t = copy.deepcopy(table)
    full = t.predict()
    calls = []

    def measure(candidate):
        structural = t.anchors[0].ms - (t.anchors[0].ms - _structural(t, widths_of(candidate, t)))
        ms = full - 0.6 * (full - structural)
        calls.append(ms)
        return ms

    student = copy.deepcopy(teacher)
    cfg = PruneConfig(ratio=0.2, target="latency", importance="l1", latency_rounds=3)
    res = prune_latency(student, cfg, t, measure=measure)
    cal = res.report.latency["calibration"]
    assert 2 <= len(cal) <= 3 and len(calls) == len(cal)
    assert cal[0]["measured_ms"] > 0.8 * full * 1.01  # the first plan missed on the real backend
    assert t.savings_scale == pytest.approx(0.6, rel=1e-6)
    final = full - 0.6 * (full - _structural(t, widths_of(student, t)))
    assert final <= 0.8 * full * 1.01


def _structural(t, widths):
    s, v = t._parts(widths)
    return t.fixed_ms + t.per_volume_ms * v + s


def test_interrupted_measurement_resumes_and_never_leaves_a_table(bundle_dir, tmp_path):
    b = load_bundle(bundle_dir)
    out = tmp_path / "t.json"
    with pytest.raises(MeasureInterrupted, match="run the same command again to resume"):
        measure_bundle(b, AnalyticTimer(interrupt_after=25), out, FAST)
    assert not out.exists()
    partial = out.with_name("t.json.partial")
    assert partial.exists()
    timer = AnalyticTimer()
    table = measure_bundle(b, timer, out, FAST)
    assert out.exists() and not partial.exists()
    assert table.meta["resumed_cells"] >= 25 - 2  # saved at least the last full save
    extra = sum(len(v) for v in extra_cells(b).values())  # held-out pairs, the step sweep
    assert timer.calls == b.n_cells + extra - table.meta["resumed_cells"] + len(b.anchors)


def test_cli_round_trip_probes_latency_compress(tmp_path, synth_dataset, capsys):
    """mtc-probes (workstation) -> mtc-latency (vehicle, torch-free, real ONNX Runtime) ->
    mtc-compress --latency-table: the documented round trip."""
    from compressor.cli.compress import main as compress_main
    from export.probes_cli import main as probes_main

    torch.manual_seed(0)
    ckpt = tmp_path / "teacher.pt"
    save_checkpoint(
        ckpt, build_model("yolop", width=0.25, depth=0.33), preprocess=default_preprocess(HW)
    )
    assert probes_main(["--teacher", str(ckpt), "-o", str(tmp_path / "probes")]) == 0
    table = tmp_path / "table.json"
    code = """
import sys
sys.modules['torch'] = None  # the vehicle has no torch
from runtime.latency_model.cli import main
sys.exit(main(sys.argv[1:]))
"""
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "probes"), "-o", str(table), "--no-progress"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "wrote" in out.stdout and load_table(table).key.backend == "onnxruntime"
    # the table says which grid it was measured on and the backend's channel block, and the
    # CLI says when the grid splits those blocks (x86 with AVX-512: 16 > the default 8)
    from runtime.hostinfo import cpu_flags
    from runtime.latency_model.onnxruntime_timer import nchwc_block

    block = nchwc_block(cpu_flags())
    meta = load_table(table).meta
    assert meta["grid"] == {"round_to": 8, "min_width": 8} and meta["channel_block"] == block
    assert ("--round-to 16" in out.stdout) == (block == 16), out.stdout
    # a table for another input size is refused before any work, one line, exit 2
    base = [
        "--teacher",
        str(ckpt),
        "--data",
        str(synth_dataset),
        "--calib-batches",
        "1",
        "--batch",
        "2",
        "--workers",
        "0",
        "--no-progress",
        "--max-train-images",
        "2",
        "--max-val-images",
        "2",
        "--epochs",
        "0",
        "--target",
        "latency",
        "--importance",
        "l1",
        "--latency-table",
        str(table),
        "--latency-rounds",
        "0",
    ]
    capsys.readouterr()
    code = compress_main(
        [*base, "-o", str(tmp_path / "bad"), "--imgsz", "128", "256", "--ratio", "0.05"]
    )
    err = capsys.readouterr().err
    assert (
        code == 2
        and err.count("\n") == 1
        and "input_hw: table has [64, 128]" in err.replace("(64, 128)", "[64, 128]")
    )
    assert not (tmp_path / "bad").exists()
    code = compress_main(
        [*base, "-o", str(tmp_path / "ok"), "--imgsz", "64", "128", "--ratio", "0.05"]
    )
    assert code == 0, capsys.readouterr().err
    import json

    rep = json.loads((tmp_path / "ok" / "report.json").read_text())
    # no --round-to: the plan is on the table's channel block (16 on AVX-512), from a grid of 8
    assert rep["pruning"]["round_to"]["value"] == (block or 8)
    assert rep["pruning"]["round_to"]["setting"] is None
    # bad round_to input, one line each, before any pruning: 'auto' with a table that records
    # no block, and a step the table's grid of 8 does not divide
    blockless = tmp_path / "blockless.json"
    raw = json.loads(table.read_text())
    raw["meta"]["channel_block"] = None
    blockless.write_text(json.dumps(raw))
    for flags, message in (
        (["--latency-table", str(blockless), "--round-to", "auto"], "records none"),
        (["--round-to", "12"], "probed on a grid of 8 channels"),
        (["--round-to", "x"], "expected a positive integer or 'auto'"),
    ):
        capsys.readouterr()
        code = compress_main(
            [*base, *flags, "-o", str(tmp_path / "bad2"), "--imgsz", "64", "128", "--ratio", "0.05"]
        )
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and message in err, err
        assert not (tmp_path / "bad2" / "report.json").exists()
    assert (
        rep["latency"]["predicted"]["predicted_after_ms"]
        <= 0.95 * rep["latency"]["predicted"]["predicted_before_ms"] * 1.001
    )
    assert rep["latency"]["measured"]["student_ms"] > 0
    assert (tmp_path / "ok" / "latency_savings.png").exists()


def test_remote_backend_needs_a_table_measured_on_the_device(tmp_path, synth_dataset, capsys):
    from compressor.cli.compress import main as compress_main

    torch.manual_seed(0)
    ckpt = tmp_path / "teacher.pt"
    save_checkpoint(
        ckpt, build_model("yolop", width=0.25, depth=0.33), preprocess=default_preprocess(HW)
    )
    code = compress_main(
        [
            "--teacher",
            str(ckpt),
            "--data",
            str(synth_dataset),
            "-o",
            str(tmp_path / "o"),
            "--target",
            "latency",
            "--latency-backend",
            "tensorrt",
            "--no-progress",
            "--workers",
            "0",
            "--batch",
            "2",  # fits the 6 training images (a larger batch is refused first)
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "measured on the machine that runs the model" in err
    assert err.count("\n") == 1


class _TwoConv(torch.nn.Module):
    def __init__(self, width: int = 16):
        super().__init__()
        self.a = torch.nn.Conv2d(3, width, 3, 1, 1)
        self.head = torch.nn.Conv2d(width, 2, 1)

    def forward(self, x):
        return {"drivable": self.head(torch.relu(self.a(x)))}


def test_local_table_is_cached_reused_and_remeasured_when_damaged(tmp_path):
    from compressor.latency import obtain_table

    model, logs = _TwoConv().eval(), []
    first = obtain_table(model, (32, 64), threads=1, cache=tmp_path, log=logs.append)
    assert any("exporting probes" in m for m in logs)
    (cached,) = (tmp_path / "latency").glob("*.json")
    logs.clear()
    again = obtain_table(model, (32, 64), threads=1, cache=tmp_path, log=logs.append)
    # the default grid is the backend's channel block: no hint that it splits the blocks
    assert logs == [f"latency table: reusing {cached}"]
    assert again.key == first.key, (again.key, first.key)
    assert again.predict() == pytest.approx(first.predict(), abs=1e-4)  # file keeps 10 ns
    cached.write_text("{ damaged")
    logs.clear()
    obtain_table(model, (32, 64), threads=1, cache=tmp_path, log=logs.append)
    assert any("exporting probes" in m for m in logs)
    assert load_table(cached).key == first.key


def test_local_table_of_another_grid_is_not_reused(tmp_path):
    """The probe grid follows round_to / min_width: a table measured on the grid of 8 holds no
    timing at the widths a plan on 16 keeps, so it is measured again (and both are kept)."""
    from compressor.latency import obtain_table

    model, logs = _TwoConv(width=56).eval(), []
    eight = obtain_table(
        model, (32, 64), threads=1, round_to=8, cache=tmp_path, log=lambda _m: None
    )
    sixteen = obtain_table(
        model, (32, 64), threads=1, round_to=16, min_width=16, cache=tmp_path, log=logs.append
    )
    assert any("exporting probes" in m for m in logs) and not any("reusing" in m for m in logs)
    assert len(list((tmp_path / "latency").glob("*.json"))) == 2
    assert eight.meta["grid"] == {"round_to": 8, "min_width": 8}
    assert sixteen.meta["grid"] == {"round_to": 16, "min_width": 16}
    probe = sixteen.layers["a"].probe
    assert eight.probes[probe].grid_out == [8, 16, 32, 40, 56]
    assert sixteen.probes[probe].grid_out == [16, 32, 48, 56]  # multiples of 16, and the full


def _out_fraction_kept(before, after):
    return {n: after[n][1] / before[n][1] for n in after if n in before}


@pytest.mark.parametrize(("target", "cap"), [("latency", 0.5), ("params", 0.4)])
def test_max_group_ratio_spreads_the_cut(teacher, table, target, cap):
    kept = {}
    for c in (1.0, cap):
        student = copy.deepcopy(teacher)
        cfg = PruneConfig(ratio=0.3, target=target, importance="l1", max_group_ratio=c)
        res = prune_latency(student, cfg, table)
        assert res.report.achieved_ratio >= 0.3 - 1e-9
        kept[c] = _out_fraction_kept(widths_of(teacher, table), widths_of(student, table))
    assert min(kept[1.0].values()) < 1 - cap  # uncapped, some layer loses more than the cap
    assert min(kept[cap].values()) >= 1 - cap  # capped, none does


def test_group_floor_rounds_the_cap_up():
    from compressor.pruning.plan import group_floor

    assert group_floor(24, 0, 8, 8, 1.0) == 8  # no cap: min_width
    assert group_floor(24, 0, 8, 8, 0.5) == 16  # keeps 12 -> rounded up to 16
    assert group_floor(192, 0, 8, 8, 0.5) == 96
    assert group_floor(20, 0, 8, 8, 0.1) == 20  # never more than the group has
    assert group_floor(64, 40, 8, 8, 0.5) == 40  # the safe channels still hold


def test_max_group_ratio_outside_its_range_is_a_named_error():
    with pytest.raises(PruneConfigError, match=r"max_group_ratio must be in \(0, 1\], got 0"):
        PruneConfig(max_group_ratio=0)


def test_block_hint_names_the_backends_channel_block(tmp_path):
    from compressor.latency import obtain_table
    from compressor.latency.local import block_hint

    table = obtain_table(_TwoConv(width=32).eval(), (32, 64), threads=1, cache=tmp_path, log=print)
    table.meta["channel_block"] = 16
    logs: list[str] = []
    msg = block_hint(table, 8, logs.append)
    assert logs == [msg] and "blocks of 16 channels" in msg and "--round-to 16" in msg
    assert block_hint(table, 32, logs.append) is None  # a multiple of the block is fine
    table.meta["channel_block"] = None  # unknown (e.g. TensorRT, ARM CPUs)
    assert block_hint(table, 8, logs.append) is None and len(logs) == 1


def test_report_notes_a_plan_that_splits_the_channel_blocks():
    from compressor.compress import _latency_md

    m = {
        "rounds": {"teacher": [2.0]},
        "backend": "onnxruntime",
        "device": "cpu",
        "batch": 1,
        "threads": 1,
        "clock": "thread CPU time",
        "teacher_ms": 2.0,
        "student_ms": 1.5,
        "student_over_teacher": 0.75,
        "speedup": 1.33,
    }
    p = {
        "key": {"backend": "onnxruntime", "precision": "fp32", "device": "cpu"},
        "predicted_before_ms": 2.0,
        "predicted_after_ms": 1.2,
        "grid": {"round_to": 8, "min_width": 8},
        "channel_block": 16,
    }
    md = "\n".join(_latency_md({"measured": m, "predicted": p}))
    assert "blocks of 16 channels" in md and "--round-to 16" in md
    for fine in ({**p, "grid": {"round_to": 16, "min_width": 16}}, {**p, "channel_block": None}):
        assert "blocks of" not in "\n".join(_latency_md({"measured": m, "predicted": fine}))


def test_round_to_resolves_from_the_tables_channel_block():
    from compressor.pruning.config import resolve_round_to

    t = "the table"
    assert (
        resolve_round_to(None, 16, t)[0] == 16
        and "channel block" in resolve_round_to(None, 16, t)[1]
    )
    assert resolve_round_to("auto", 8, t)[0] == 8
    assert resolve_round_to(24, 16, t) == (24, "given")  # an explicit value wins
    assert resolve_round_to(None, None, t, grid_step=16)[0] == 16  # no block: the table's grid
    assert resolve_round_to(None, None, t) == (8, "default 8: the table records no channel block")
    assert resolve_round_to(None, None, None)[0] == 8  # params / FLOPs: no table
    assert resolve_round_to("auto", 1, t)[0] == 8  # measured: no channel steps
    with pytest.raises(PruneConfigError, match="the table records none"):
        resolve_round_to("auto", None, t, grid_step=16)
    with pytest.raises(PruneConfigError, match="no latency table for a params"):
        resolve_round_to("auto", None, None)
    for bad in (0, -8, "16", True, 2.0):
        with pytest.raises(PruneConfigError, match="round_to must be >= 1 or 'auto'"):
            PruneConfig(round_to=bad)


def test_default_round_to_plans_on_the_tables_block(teacher, table):
    """No round_to: the table's channel block decides the widths, and the report says so;
    explicit 'auto' refuses a table without a block before any pruning work."""
    with_block = copy.copy(table)
    with_block.meta = {**table.meta, "channel_block": 16}
    cfg = PruneConfig(ratio=0.3, target="latency", importance="l1", latency_rounds=0)
    res = prune_latency(copy.deepcopy(teacher), cfg, with_block)
    assert res.report.round_to["value"] == 16 and "channel block" in res.report.round_to["source"]
    assert res.record["config"]["round_to"] == 16
    assert "Widths on steps of 16" in res.report.to_markdown()
    changed = [r for r in res.report.widths if r["before"] != r["after"]]
    assert changed and all(r["after"] % 16 == 0 for r in changed)
    res8 = prune_latency(copy.deepcopy(teacher), replace(cfg, round_to=8), with_block)
    assert res8.report.round_to == {"value": 8, "setting": 8, "source": "given"}
    blockless = copy.copy(table)
    blockless.meta = {**table.meta, "channel_block": None}
    model = copy.deepcopy(teacher)
    before = {n: p.shape for n, p in model.state_dict().items()}
    with pytest.raises(PruneConfigError, match="records none"):
        prune_latency(model, replace(cfg, round_to="auto"), blockless)
    assert {n: p.shape for n, p in model.state_dict().items()} == before
    res = prune_latency(copy.deepcopy(teacher), cfg, blockless)  # the default falls back
    assert res.report.round_to["value"] == table.meta["grid"]["round_to"] == 8


def test_a_backend_without_a_known_block_gets_it_measured(bundle_dir, teacher, tmp_path):
    """A timer that knows no channel block (TensorRT's): the step sweep measures it, the table
    records it, and the default round_to plans on it; a smooth backend records 'no steps'."""
    b = load_bundle(bundle_dir)
    blocked = measure_bundle(b, AnalyticTimer(block=8), tmp_path / "b.json", FAST)
    assert blocked.meta["channel_block"] == 8
    assert blocked.meta["channel_block_from"] == "measured (channel_steps)"
    assert blocked.meta["channel_steps"]["block"] == 8
    cfg = PruneConfig(ratio=0.2, target="latency", importance="l1", latency_rounds=0)
    res = prune_latency(copy.deepcopy(teacher), cfg, blocked)
    assert res.report.round_to["value"] == 8 and "channel block" in res.report.round_to["source"]
    smooth = measure_bundle(b, AnalyticTimer(), tmp_path / "s.json", FAST)
    assert smooth.meta["channel_block"] == 1  # measured: no channel steps
    res = prune_latency(copy.deepcopy(teacher), replace(cfg, round_to="auto"), smooth)
    assert res.report.round_to["value"] == 8 and "no channel steps" in res.report.round_to["source"]
    # every held-out cell is on the grid's step and off its grid; the bilinear model is exact
    # for the analytic (bilinear) backend, so it is the one chosen
    assert smooth.cell_model["model"] == "bilinear" and smooth.cell_model["holdout_cells"] > 10
    for p in smooth.probes.values():
        for ci, co, _ in p.holdout:
            assert ci % 8 == 0 and co % 8 == 0 and (ci not in p.grid_in or co not in p.grid_out)
