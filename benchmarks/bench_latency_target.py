"""The latency target on the full-size YOLOP (640x384, ONNX Runtime CPU, batch 1): how long the
latency table takes to measure, how close its prediction comes to the measured student, and the
measured speed-up of `--target latency --ratio R` next to params / FLOPs targets, all students and
the teacher timed side by side (interleaved) in one run.

Calibration data are random images with random boxes and masks (the latency of a plan does not
depend on them; the importance scores do, so accuracy is the demo's and the ablation's business).
Targets: table < 180 s on 2 cores; student <= 0.55x the teacher at R = 0.5; prediction within 10 %.
Prints a table and writes benchmarks/results/latency_target.json.

    PYTHONPATH=. python benchmarks/bench_latency_target.py
    PYTHONPATH=. python benchmarks/bench_latency_target.py --ratio 0.5 --compare params:0.4 flops:0.4
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from bench_prune_speed import random_batches

from compressor import build_model
from compressor.latency import measure_models, obtain_table, plan_measurer
from compressor.losses import YolopLoss
from compressor.models.registry import get_spec
from compressor.pruning import PruneConfig, prune
from runtime.hostinfo import cpu_name
from runtime.latency_model.cell_models import MODELS

ROOT = Path(__file__).resolve().parents[1]
TABLE_BUDGET_S = 180.0


def add_common_args(p: argparse.ArgumentParser) -> None:
    """The teacher, the target and the timing (shared with bench_depth_prune)."""
    p.add_argument("--imgsz", type=int, nargs=2, default=(384, 640), metavar=("H", "W"))
    p.add_argument("--ratio", type=float, default=0.5)
    p.add_argument("--importance", default="tci_gcp")
    p.add_argument("--calib-batches", type=int, default=4)
    p.add_argument("--rounds", type=int, default=7, help="interleaved measurement rounds")
    p.add_argument("--width", type=float, default=1.0, help="teacher width (demo: 0.75)")
    p.add_argument("--depth", type=float, default=1.0, help="teacher depth (demo: 0.33)")
    p.add_argument("--max-group-ratio", type=float, default=1.0, help="demo: 0.5")
    p.add_argument("--latency-rounds", type=int, default=2, help="plan checks (demo: 0)")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads (1: CPU clock)")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(p)
    p.add_argument(
        "--round-to",
        type=int,
        default=None,
        help="width step (default: PruneConfig's, the table's channel block: 16 on AVX-512)",
    )
    p.add_argument("--compare", nargs="*", default=["params:0.4", "flops:0.4"])
    p.add_argument(
        "--json", type=Path, default=ROOT / "benchmarks" / "results" / "latency_target.json"
    )
    return p.parse_args()


def measure_table(teacher, hw, threads: int, round_to: int | None = None):
    """(table, seconds): the latency table of `teacher` on ONNX Runtime CPU, measured afresh."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:
        table = obtain_table(
            teacher,
            hw,
            1,
            threads=threads,
            protected=get_spec("yolop").protected,
            round_to=round_to,
            cache=Path(cache),
        )
    return table, time.perf_counter() - t0


def run_facts(hw, threads: int, load) -> dict:
    """Where and how the timings were taken (every results JSON of these benchmarks has them)."""
    return {
        "input_hw": list(hw),
        "batch": 1,
        "backend": "onnxruntime CPU",
        "threads": threads,
        "clock": "thread CPU time" if threads == 1 else "wall time",
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "load_avg_at_start": [round(x, 2) for x in load],
    }


def write_result(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


def widths(model: torch.nn.Module, table) -> dict:
    mods = dict(model.named_modules())
    return {n: (mods[n].in_channels, mods[n].out_channels) for n in table.layers}


def setup(args: argparse.Namespace):
    """(input size, random-init teacher, calibration batches, load average now)."""
    torch.set_num_threads(1)
    hw = tuple(args.imgsz)
    torch.manual_seed(0)
    teacher = build_model("yolop", width=args.width, depth=args.depth).eval()
    return hw, teacher, random_batches(args.calib_batches, 2, hw), os.getloadavg()


def main() -> None:
    args = parse_args()
    hw, teacher, batches, load = setup(args)
    protected = get_spec("yolop").protected
    loss = YolopLoss.for_model(teacher)

    table, table_s = measure_table(teacher, hw, args.threads, args.round_to)

    students: dict[str, torch.nn.Module] = {}
    info: dict[str, dict] = {}
    common = dict(
        importance=args.importance,
        calib_batches=args.calib_batches,
        round_to=args.round_to,
        flops_input_hw=hw,
    )
    s = copy.deepcopy(teacher)
    t0 = time.perf_counter()
    res = prune(
        s,
        loss,
        batches,
        PruneConfig(
            ratio=args.ratio,
            target="latency",
            max_group_ratio=args.max_group_ratio,
            latency_rounds=args.latency_rounds,
            **common,
        ),
        example_inputs=torch.zeros(1, 3, *hw),
        protected=protected,
        progress=False,
        latency_table=table,
        measure=plan_measurer(teacher, table),
    )
    name = f"latency:{args.ratio}"
    students[name] = s
    info[name] = {"report": res.report, "seconds": time.perf_counter() - t0}
    for spec in args.compare:
        target, ratio = spec.split(":")
        s = copy.deepcopy(teacher)
        res = prune(
            s,
            loss,
            batches,
            PruneConfig(ratio=float(ratio), target=target, **common),
            example_inputs=torch.zeros(1, 3, *hw),
            protected=protected,
            progress=False,
        )
        students[spec] = s
        info[spec] = {"report": res.report}

    measured = measure_models(
        {"teacher": teacher, **students}, hw, 1, threads=args.threads, rounds=args.rounds
    )
    t_ms = measured["teacher"]["median_ms"]
    pred_t = table.anchors[0].ms
    rows = []
    for name, s in students.items():
        rep = info[name]["report"]
        m = measured[name]["median_ms"]
        pred = table.predict(widths(s, table))
        lat = rep.latency or {}
        planned = (
            lat["predicted_after_ms"] / lat["predicted_before_ms"] if lat else None
        )  # the ratio the plan was made for, as the table predicted it when planning
        rows.append(
            {
                "student": name,
                "params_ratio": round(rep.params_ratio, 4),
                "flops_ratio": round(rep.flops_ratio, 4),
                "measured_ms": m,
                "student_over_teacher": round(m / t_ms, 4),
                "predicted_ms": round(pred, 3),
                "prediction_error": round(pred / m - 1, 4),
                "prediction_error_drift_corrected": round(pred * t_ms / (pred_t * m) - 1, 4),
                "planned_over_teacher": None if planned is None else round(planned, 4),
                "round_to": rep.round_to,
                # each cell model's prediction before any plan check recalibrated it, as a
                # ratio to its own prediction of the teacher (drift cancels): 1-D vs 2-D
                "uncalibrated_over_teacher": {
                    mdl: round(
                        table.predict_uncalibrated(widths(s, table), mdl)
                        / table.predict_uncalibrated({}, mdl),
                        4,
                    )
                    for mdl in MODELS
                },
                "rounds_ms": measured[name]["rounds_ms"],
                "calibration": (rep.latency or {}).get("calibration"),
                "prune_seconds": round(info[name].get("seconds", 0.0), 1),
            }
        )
    result = {
        "model": f"yolop width {args.width} depth {args.depth} (random init)",
        "max_group_ratio": args.max_group_ratio,
        "latency_rounds": args.latency_rounds,
        **run_facts(hw, args.threads, load),
        "importance": args.importance,
        "round_to_flag": args.round_to,
        "cell_model": table.cell_model,
        "channel_block": table.meta.get("channel_block"),
        "channel_steps": table.meta.get("channel_steps"),
        "table_seconds": round(table_s, 1),
        "table_budget_s": TABLE_BUDGET_S,
        "table_cells": table.meta.get("cells"),
        "table_probes": len(table.probes),
        "teacher_ms": t_ms,
        "teacher_rounds_ms": measured["teacher"]["rounds_ms"],
        "teacher_predicted_ms": round(pred_t, 3),
        "savings_scale": round(table.savings_scale, 4),
        "students": rows,
    }
    print(
        f"YOLOP w{args.width} d{args.depth} at {hw[1]}x{hw[0]}, ONNX Runtime CPU ({cpu_name()}), batch 1, "
        f"{args.threads} thread(s), {result['clock']}; load at start {load[0]:.1f}"
    )
    print(
        f"latency table: {table_s:.0f} s for {result['table_cells']} probe widths "
        f"(budget {TABLE_BUDGET_S:.0f} s: {'OK' if table_s < TABLE_BUDGET_S else 'OVER'})"
    )
    print(
        f"{'student':14s} {'params':>8s} {'FLOPs':>8s} {'ms':>8s} {'x teacher':>9s} "
        f"{'predicted':>9s} {'error':>7s} {'drift-corr':>10s}"
    )
    print(f"{'teacher':14s} {'':>8s} {'':>8s} {t_ms:8.1f} {1.0:9.3f} {pred_t:9.1f}")
    for r in rows:
        print(
            f"{r['student']:14s} {-r['params_ratio']:+8.1%} {-r['flops_ratio']:+8.1%} "
            f"{r['measured_ms']:8.1f} {r['student_over_teacher']:9.3f} {r['predicted_ms']:9.1f} "
            f"{r['prediction_error']:+7.1%} {r['prediction_error_drift_corrected']:+10.1%}"
        )
    write_result(args.json, result)


if __name__ == "__main__":
    main()
