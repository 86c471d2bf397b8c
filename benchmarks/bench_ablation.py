"""Ablation of the compression method on the synthetic set: importance in {random, l1,
taylor_sum, tci, tci_gcp} x {no KD, KD}, same teacher, same parameter ratio, same seeds, same
epochs. Each run is one `compress()` (calibrate -> prune -> fine-tune or distil -> evaluate
teacher and student on the same val split). Prints a table of deltas vs the teacher (points)
and writes benchmarks/results/ablation.json.

Targets (METHOD.md) for tci_gcp + KD at >= 40% fewer parameters: mAP50 and recall within 1.0
point of the teacher, drivable mIoU within 0.5, lane IoU within 1.0, and a mean task delta
at least as good as every baseline. The synthetic set says nothing about BDD100K accuracy.

    PYTHONPATH=. python benchmarks/bench_ablation.py --teacher out/bench_teacher/best.pt \\
        --data out/bench_teacher_data --epochs 8
    PYTHONPATH=. python benchmarks/bench_ablation.py --epochs 1 --importances tci_gcp l1   # quick
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path

import torch

from compressor.compress import CompressConfig, compress
from compressor.data.synth import SynthConfig, generate
from compressor.distill import DistillConfig
from compressor.pruning import IMPORTANCES, PruneConfig
from compressor.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
HEAD = ("det_map50", "drivable_miou", "lane_iou")  # one headline metric per task
COLUMNS = ("det_map50", "det_recall", "drivable_miou", "lane_iou")
TARGETS = {"det_map50": -1.0, "det_recall": -1.0, "drivable_miou": -0.5, "lane_iou": -1.0}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", type=Path, default=None, help="default: train one")
    p.add_argument("--teacher-epochs", type=int, default=15)
    p.add_argument("--data", type=Path, default=ROOT / "out" / "bench_teacher_data")
    p.add_argument("--n-train", type=int, default=300)
    p.add_argument("--n-val", type=int, default=60)
    p.add_argument("--out", type=Path, default=ROOT / "out" / "bench_ablation")
    p.add_argument("--imgsz", type=int, nargs=2, default=(192, 320))
    p.add_argument("--ratio", type=float, default=0.4)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--calib-batches", type=int, default=8)
    p.add_argument("--importances", nargs="+", default=list(IMPORTANCES))
    p.add_argument("--kd-modes", nargs="+", default=["no_kd", "kd"], choices=["no_kd", "kd"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1)
    # one thread: on a shared 2-core machine two OpenMP threads can run 10-60x slower
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "ablation.json")
    return p.parse_args()


def ensure_data(args: argparse.Namespace) -> None:
    if (args.data / "images" / "val").is_dir():
        return
    generate(
        SynthConfig(out=args.data, n_train=args.n_train, n_val=args.n_val, seed=0, overwrite=True),
        progress=True,
    )


def ensure_teacher(args: argparse.Namespace) -> Path:
    """A private copy of the given teacher (so nothing rewrites it mid-run), or a new one."""
    dst = args.out / "teacher.pt"
    args.out.mkdir(parents=True, exist_ok=True)
    if args.teacher is not None:
        shutil.copyfile(args.teacher, dst)
        return dst
    if not dst.is_file():
        res = train(
            TrainConfig(
                data=str(args.data),
                out=str(args.out / "teacher_run"),
                width=0.25,
                depth=0.33,
                imgsz=tuple(args.imgsz),
                epochs=args.teacher_epochs,
                batch=args.batch,
                workers=args.workers,
                seed=args.seed,
                overwrite=True,
            )
        )
        shutil.copyfile(res.best or res.last, dst)
    return dst


def run_one(args, teacher: Path, importance: str, kd: bool) -> dict:
    name = f"{importance}{'_kd' if kd else ''}"
    cfg = CompressConfig(
        teacher=str(teacher),
        data=str(args.data),
        out=str(args.out / name),
        imgsz=tuple(args.imgsz),
        kd=kd,
        epochs=args.epochs,
        lr=args.lr,
        batch=args.batch,
        prune=PruneConfig(
            ratio=args.ratio,
            importance=importance,
            calib_batches=args.calib_batches,
            seed=args.seed,
        ),
        distill=DistillConfig(),
        workers=args.workers,
        seed=args.seed,
        overwrite=True,
        progress=False,
    )
    t0 = time.perf_counter()
    rep = compress(cfg).report
    d = rep["deltas_points"]
    return {
        "run": name,
        "importance": importance,
        "kd": kd,
        "params_reduction": rep["params_reduction"],
        "flops_reduction": rep["flops_reduction"],
        "deltas_points": {k: d[k] for k in COLUMNS},
        "mean_task_delta": round(sum(d[k] for k in HEAD) / len(HEAD), 3),
        "student_metrics": rep["student"]["metrics"],
        "teacher_metrics": rep["teacher"]["metrics"],
        "seconds": round(time.perf_counter() - t0, 1),
    }


def table(rows: list[dict]) -> str:
    head = (
        "| run | params | GFLOPs | d mAP50 | d recall | d DA mIoU | d LL IoU | mean task d |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|"
    )
    lines = [head]
    for r in rows:
        d = r["deltas_points"]
        lines.append(
            f"| {r['run']} | {-r['params_reduction']:+.1%} | {-r['flops_reduction']:+.1%}"
            f" | {d['det_map50']:+.2f} | {d['det_recall']:+.2f} | "
            f"{d['drivable_miou']:+.2f} | {d['lane_iou']:+.2f} | "
            f"{r['mean_task_delta']:+.2f} |"
        )
    return "\n".join(lines)


def check_targets(rows: list[dict], ratio: float) -> dict:
    ours = next((r for r in rows if r["importance"] == "tci_gcp" and r["kd"]), None)
    if ours is None:
        return {"evaluated": False}
    per_metric = {k: ours["deltas_points"][k] >= lim for k, lim in TARGETS.items()}
    others = [r for r in rows if r is not ours]
    best_mean = all(ours["mean_task_delta"] >= r["mean_task_delta"] for r in others)
    return {
        "evaluated": True,
        "ratio_met": ours["params_reduction"] >= ratio,
        "within_limits": per_metric,
        "best_mean_task_delta": best_mean,
        "all_met": all(per_metric.values()) and best_mean and ours["params_reduction"] >= ratio,
    }


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    ensure_data(args)
    teacher = ensure_teacher(args)
    rows = []
    for importance in args.importances:
        for mode in args.kd_modes:
            row = run_one(args, teacher, importance, mode == "kd")
            rows.append(row)
            print(
                f"{row['run']}: mean task delta {row['mean_task_delta']:+.2f} points "
                f"({row['seconds']:.0f} s)",
                flush=True,
            )
    targets = check_targets(rows, args.ratio)
    teacher_m = rows[0]["teacher_metrics"] if rows else {}
    result = {
        "data": str(args.data),
        "teacher": str(args.teacher or teacher),
        "imgsz": list(args.imgsz),
        "ratio": args.ratio,
        "epochs": args.epochs,
        "lr": args.lr,
        "batch": args.batch,
        "calib_batches": args.calib_batches,
        "seed": args.seed,
        "threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "teacher_metrics": teacher_m,
        "mean_task_delta_of": list(HEAD),
        "runs": rows,
        "targets": targets,
    }
    print(
        f"teacher: mAP50 {100 * teacher_m.get('det_map50', 0):.1f}, recall "
        f"{100 * teacher_m.get('det_recall', 0):.1f}, DA mIoU "
        f"{100 * teacher_m.get('drivable_miou', 0):.1f}, LL IoU "
        f"{100 * teacher_m.get('lane_iou', 0):.1f}"
    )
    print(table(rows))
    print(f"targets for tci_gcp + KD: {json.dumps(targets)}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
