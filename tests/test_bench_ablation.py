"""The ablation benchmark's bookkeeping: seed aggregation and the target check it reports."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location(
        "bench_ablation", ROOT / "benchmarks" / "bench_ablation.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _row(bench, run, importance, kd, seed, val, holdout=None, params=0.41):
    def split(d):
        full = dict.fromkeys(bench.COLUMNS, 0.0) | d
        full["mean_task"] = sum(full[k] for k in bench.HEAD) / len(bench.HEAD)
        return full

    return {
        "run": run,
        "importance": importance,
        "kd": kd,
        "seed": seed,
        "params_reduction": params,
        "flops_reduction": 0.2,
        "deltas_points": {"val": split(val), "holdout": split(holdout or val)},
    }


def test_aggregate_mean_and_sample_std_per_split(bench):
    rows = [
        _row(bench, "tci_gcp_kd", "tci_gcp", True, 0, {"det_map50": -1.0}, {"det_map50": 2.0}),
        _row(bench, "tci_gcp_kd", "tci_gcp", True, 1, {"det_map50": -3.0}, {"det_map50": 4.0}),
        _row(bench, "l1", "l1", False, 0, {"det_map50": -5.0}),
    ]
    lines = {line["run"]: line for line in bench.aggregate(rows)}
    ours = lines["tci_gcp_kd"]
    assert ours["seeds"] == [0, 1]
    assert ours["val"]["det_map50"] == {"mean": -2.0, "std": pytest.approx(1.414, abs=1e-3)}
    assert ours["holdout"]["det_map50"]["mean"] == 3.0
    assert ours["val"]["mean_task"]["mean"] == pytest.approx(-2.0 / 3, abs=1e-3)
    assert lines["l1"]["val"]["det_map50"] == {"mean": -5.0, "std": None}  # one seed: no std


def test_targets_on_seed_means_and_control_is_not_a_baseline(bench):
    ok = {"det_map50": -0.5, "det_recall": 0.2, "drivable_miou": -0.1, "lane_iou": 0.3}
    rows = [
        _row(bench, "tci_gcp_kd", "tci_gcp", True, 0, ok),
        _row(bench, "l1_kd", "l1", True, 0, {"det_map50": -2.0}),
        # the unpruned control may beat the students; it must not count as a baseline row
        _row(bench, bench.CONTROL, "none", False, 0, {"det_map50": 3.0}, params=0.0),
    ]
    res = bench.check_targets(bench.aggregate(rows), 0.4, "val")
    assert res["all_met"] and res["best_mean_task_delta"]

    worse = dict(ok, drivable_miou=-0.6)  # outside the 0.5-point limit
    rows[0] = _row(bench, "tci_gcp_kd", "tci_gcp", True, 0, worse)
    res = bench.check_targets(bench.aggregate(rows), 0.4, "val")
    assert res["within_limits"]["drivable_miou"] is False and not res["all_met"]

    rows[0] = _row(bench, "tci_gcp_kd", "tci_gcp", True, 0, ok, params=0.35)  # ratio missed
    assert bench.check_targets(bench.aggregate(rows), 0.4, "val")["ratio_met"] is False


def test_deltas_vs_control_are_paired_by_seed(bench):
    rows = [
        _row(bench, "tci_gcp_kd", "tci_gcp", True, 0, {"det_map50": 1.0}),
        _row(bench, "tci_gcp_kd", "tci_gcp", True, 1, {"det_map50": 3.0}),
        _row(bench, bench.CONTROL, "none", False, 0, {"det_map50": 2.0}, params=0.0),
        _row(bench, bench.CONTROL, "none", False, 1, {"det_map50": 5.0}, params=0.0),
    ]
    lines = {line["run"]: line for line in bench.aggregate(rows)}
    vs = lines["tci_gcp_kd"]["val_vs_control"]["det_map50"]
    assert vs["mean"] == -1.5  # (1-2 + 3-5) / 2: seed 0 against seed 0, seed 1 against seed 1
    assert vs["std"] == pytest.approx(0.707, abs=1e-3)
    assert "val_vs_control" not in lines[bench.CONTROL]
    assert bench.views_of(list(lines.values())) == [
        "val",
        "holdout",
        "val_vs_control",
        "holdout_vs_control",
    ]


def test_targets_compared_at_the_same_latency(bench):
    rows = []
    for target, dm in (("params", -4.0), ("flops", -2.0), ("latency", -1.0)):
        for seed in (0, 1):
            r = _row(bench, f"tci_gcp_kd_{target}", "tci_gcp", True, seed, {"det_map50": dm})
            r["target"], r["student_over_teacher_latency"] = target, 0.66 + 0.01 * seed
            rows.append(r)
    lines = bench.aggregate(rows)
    assert {line["target"] for line in lines} == {"params", "flops", "latency"}
    assert all(line["student_over_teacher_latency"] == 0.665 for line in lines)
    cmp = bench.compare_targets(lines, "val")
    assert cmp["compared"] and cmp["most_accuracy_kept"] == "latency"
    assert cmp["targets"]["params"]["det_map50"] == -4.0
    assert "latency x" in bench.table(lines, "val") and "0.665" in bench.table(lines, "val")


def test_run_names_carry_the_target_only_when_targets_vary(bench):
    class A:
        targets, tag = ["params"], ""

    assert bench.run_name(A, "tci_gcp", True, "params") == "tci_gcp_kd"
    A.targets = ["params", "latency"]
    assert bench.run_name(A, "tci_gcp", True, "latency") == "tci_gcp_kd_latency"
