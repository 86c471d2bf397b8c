"""How long task-aware pruning of the full-size YOLOP (width 1, 7.9M params) takes on CPU:
graph tracing, calibration (one backward per task per batch), scoring, planning, execution.

Calibration data are random images with random boxes and masks (speed does not depend on
content). Target: the whole prune under 5 minutes on 2 CPU cores with 8 batches at 640x384.
Prints a table and writes benchmarks/results/prune_speed.json.

    PYTHONPATH=. python benchmarks/bench_prune_speed.py
    PYTHONPATH=. python benchmarks/bench_prune_speed.py --batches 8 --batch 2 --threads 2
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import time
from pathlib import Path

import torch

from compressor import build_model
from compressor.losses import YolopLoss
from compressor.pruning import PruneConfig, prune

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 300.0


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--imgsz", type=int, nargs=2, default=(384, 640), metavar=("H", "W"))
    p.add_argument("--batches", type=int, default=8)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--ratio", type=float, default=0.4)
    p.add_argument("--importance", default="tci_gcp")
    p.add_argument("--threads", type=int, default=max(1, min(2, os.cpu_count() or 1)))
    p.add_argument(
        "--json", type=Path, default=ROOT / "benchmarks" / "results" / "prune_speed.json"
    )
    return p.parse_args()


def random_batches(n: int, bs: int, hw: tuple[int, int], seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    h, w = hw
    out = []
    for _ in range(n):
        rows = []
        for i in range(bs):
            for _ in range(8):
                wh = 12 + 100 * torch.rand(2, generator=g)
                cxy = torch.rand(2, generator=g) * torch.tensor([w - 60.0, h - 60.0]) + 30
                rows.append([i, 0, *cxy.tolist(), *wh.tolist()])
        out.append(
            {
                "images": torch.randn(bs, 3, h, w, generator=g),
                "targets": torch.tensor(rows, dtype=torch.float32),
                "drivable": (torch.rand(bs, h, w, generator=g) > 0.6).long(),
                "lane": (torch.rand(bs, h, w, generator=g) > 0.95).long(),
            }
        )
    return out


def summarize(args, cfg: PruneConfig, rep, total: float, hw) -> dict:
    step = rep.steps[-1]
    timings = dict(step.timings)
    timings["setup"] = round(total - sum(timings.values()), 3)  # tracing, FLOPs probes, checks
    return {
        "model": "yolop width 1 depth 1",
        "input_hw": list(hw),
        "calib_batches": args.batches,
        "batch": args.batch,
        "importance": cfg.importance,
        "threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "seconds_total": round(total, 2),
        "seconds_by_stage": timings,
        "seconds_per_calib_batch": round(timings["calibrate"] / args.batches, 3),
        "budget_s": BUDGET_S,
        "within_budget": total < BUDGET_S,
        "params": [rep.params_before, rep.params_after],
        "params_ratio": round(rep.params_ratio, 4),
        "gflops": [round(2 * rep.macs_before / 1e9, 3), round(2 * rep.macs_after / 1e9, 3)],
        "flops_ratio": round(rep.flops_ratio, 4),
        "groups_pruned": step.groups_pruned,
        "channels_removed": step.channels_removed,
    }


def show(r: dict) -> None:
    hw = r["input_hw"]
    print(
        f"full-size YOLOP prune ({r['importance']}, {r['calib_batches']} x {r['batch']} images "
        f"at {hw[1]}x{hw[0]}, {r['threads']} threads)"
    )
    for k, v in r["seconds_by_stage"].items():
        print(f"  {k:10s} {v:8.2f} s")
    total = r["seconds_total"]
    print(
        f"  {'total':10s} {total:8.2f} s   (budget {BUDGET_S:.0f} s: "
        f"{'OK' if total < BUDGET_S else 'OVER'})"
    )
    (p0, p1), (g0, g1) = r["params"], r["gflops"]
    print(
        f"  params {p0:,} -> {p1:,} ({-r['params_ratio']:+.1%}), GFLOPs {g0} -> {g1} "
        f"({-r['flops_ratio']:+.1%})"
    )


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    hw = tuple(args.imgsz)
    torch.manual_seed(0)
    teacher = build_model("yolop")  # width = depth = 1: the official architecture
    batches = random_batches(args.batches, args.batch, hw)
    cfg = PruneConfig(
        ratio=args.ratio, importance=args.importance, calib_batches=args.batches, flops_input_hw=hw
    )
    student = copy.deepcopy(teacher)
    t0 = time.perf_counter()
    res = prune(student, YolopLoss.for_model(teacher), batches, cfg, progress=True)
    total = time.perf_counter() - t0
    result = summarize(args, cfg, res.report, total, hw)
    show(result)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
