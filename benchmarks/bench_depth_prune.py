"""Width + depth vs width only under the latency target (issue #22, item 3): the same teacher,
table and calibration batches pruned twice to `--target latency --ratio R`, once with channels
only and once with `--depth` (the spec's removable residual blocks in the same knapsack), then
the teacher and both students timed side by side (interleaved) in one run: planned vs measured
student/teacher latency, and which blocks went.

Random init and random calibration data: latency does not depend on the weights, the plan's
importance scores do, so this measures speed only; whether depth keeps more accuracy at the
same speed needs trained teachers (the demo / ablation), not measured here.

    PYTHONPATH=. python benchmarks/bench_depth_prune.py                       # full-size YOLOP
    PYTHONPATH=. python benchmarks/bench_depth_prune.py --width 0.75 --depth 0.33 \\
        --imgsz 192 320 --ratio 0.36 --max-group-ratio 0.5 --latency-rounds 0   # the demo's
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch
from bench_latency_target import add_common_args, measure_table, run_facts, setup, write_result

from compressor.latency import measure_models, plan_measurer
from compressor.losses import YolopLoss
from compressor.models.registry import get_spec
from compressor.pruning import PruneConfig, prune
from runtime.hostinfo import cpu_name

ROOT = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(p)  # --depth there is the teacher's depth multiplier; both arms always run
    p.add_argument("--safe-top-q", type=float, default=0.1)
    p.add_argument(
        "--json", type=Path, default=ROOT / "benchmarks" / "results" / "latency_target_depth.json"
    )
    return p.parse_args()


def table_widths(model: torch.nn.Module, table) -> dict:
    """(c_in, c_out) per table layer; (0, 0) for a layer removed with its block."""
    mods = dict(model.named_modules())
    return {
        n: (mods[n].in_channels, mods[n].out_channels) if n in mods else (0, 0)
        for n in table.layers
    }


def prune_arm(args, teacher, table, batches, hw, depth: bool) -> tuple[torch.nn.Module, dict]:
    spec = get_spec("yolop")
    student = copy.deepcopy(teacher)
    own = copy.deepcopy(table)  # plan checks add anchors: each arm calibrates its own copy
    cfg = PruneConfig(
        ratio=args.ratio,
        target="latency",
        importance=args.importance,
        calib_batches=args.calib_batches,
        max_group_ratio=args.max_group_ratio,
        latency_rounds=args.latency_rounds,
        safe_top_q=args.safe_top_q,
        flops_input_hw=hw,
        depth=depth,
    )
    t0 = time.perf_counter()
    res = prune(
        student,
        YolopLoss.for_model(student),
        batches,
        cfg,
        example_inputs=torch.zeros(1, 3, *hw),
        protected=spec.protected,
        progress=False,
        latency_table=own,
        measure=plan_measurer(teacher, own),
        blocks=spec.removable_blocks,
    )
    rep = res.report
    lat = rep.latency or {}
    return student, {
        "params_ratio": round(rep.params_ratio, 4),
        "flops_ratio": round(rep.flops_ratio, 4),
        "planned_over_teacher": round(lat["predicted_after_ms"] / lat["predicted_before_ms"], 4),
        "predicted_ms": round(own.predict(table_widths(student, own)), 3),
        "savings_scale": round(own.savings_scale, 4),
        "importance_lost": rep.steps[-1].importance_lost,  # the plan's objective (same units)
        "calibration": lat.get("calibration"),
        "round_to": rep.round_to,
        "depth": rep.depth,
        "prune_seconds": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    args = parse_args()
    hw, teacher, batches, load = setup(args)
    table, table_s = measure_table(teacher, hw, args.threads)
    students, info = {}, {}
    for name, depth in (("width", False), ("width+depth", True)):
        students[name], info[name] = prune_arm(args, teacher, table, batches, hw, depth)
    measured = measure_models(
        {"teacher": teacher, **students}, hw, 1, threads=args.threads, rounds=args.rounds
    )
    t_ms, pred_t = measured["teacher"]["median_ms"], table.anchors[0].ms
    rows = []
    for name in students:
        m, r = measured[name]["median_ms"], info[name]
        rows.append(
            {
                "student": name,
                "measured_ms": m,
                "measured_over_teacher": round(m / t_ms, 4),
                "speedup": round(t_ms / m, 3),
                "prediction_error": round(r["predicted_ms"] / m - 1, 4),
                "prediction_error_drift_corrected": round(
                    r["predicted_ms"] * t_ms / (pred_t * m) - 1, 4
                ),
                "rounds_ms": measured[name]["rounds_ms"],
                **r,
            }
        )
    result = {
        "model": f"yolop width {args.width} depth {args.depth} (random init)",
        "ratio": args.ratio,
        "max_group_ratio": args.max_group_ratio,
        "latency_rounds": args.latency_rounds,
        "safe_top_q": args.safe_top_q,
        **run_facts(hw, args.threads, load),
        "importance": args.importance,
        "table_seconds": round(table_s, 1),
        "cell_model": table.cell_model.get("model"),
        "teacher_ms": t_ms,
        "teacher_rounds_ms": measured["teacher"]["rounds_ms"],
        "teacher_predicted_ms": round(pred_t, 3),
        "students": rows,
    }
    print(
        f"YOLOP w{args.width} d{args.depth} at {hw[1]}x{hw[0]}, ratio {args.ratio}, ONNX "
        f"Runtime CPU ({cpu_name()}), batch 1, {args.threads} thread(s); load {load[0]:.1f}; "
        f"table {table_s:.0f} s; teacher {t_ms:.1f} ms"
    )
    print(
        f"{'student':12s} {'planned':>8s} {'measured':>9s} {'ms':>8s} {'error':>7s} "
        f"{'lost':>7s} blocks removed"
    )
    for r in rows:
        removed = [b["block"] for b in (r["depth"] or {}).get("removed", [])]
        print(
            f"{r['student']:12s} {r['planned_over_teacher']:8.3f} {r['measured_over_teacher']:9.3f} "
            f"{r['measured_ms']:8.1f} {r['prediction_error_drift_corrected']:+7.1%} "
            f"{r['importance_lost']:7.1f} {', '.join(removed) or '-'}"
        )
    write_result(args.json, result)


if __name__ == "__main__":
    main()
