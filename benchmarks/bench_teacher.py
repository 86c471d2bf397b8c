"""Train the small teacher (yolop width 0.25, depth 0.33) on a synthetic set and report the
metrics it reaches: the number the demo and the compression ablation start from.

Generates (or reuses) a synthetic BDD100K-layout set, trains with mtc-train's defaults, scores
best.pt under YOLOP's protocol (detection yolop + coco modes, lane IoU on thin and widened
labels), prints a table and writes benchmarks/results/teacher.json.

    PYTHONPATH=. python benchmarks/bench_teacher.py                  # 300 + 60 images, CPU
    PYTHONPATH=. python benchmarks/bench_teacher.py --epochs 6 --n-train 120   # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from compressor.data.synth import SynthConfig, generate
from compressor.train import EvalConfig, EvalJob, TrainConfig, evaluate_checkpoint, train
from compressor.train.report import eval_text, write_json

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "teacher.json"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=ROOT / "out" / "bench_teacher_data")
    p.add_argument("--n-train", type=int, default=300)
    p.add_argument("--n-val", type=int, default=60)
    p.add_argument("--out", type=Path, default=ROOT / "out" / "bench_teacher")
    p.add_argument("--imgsz", type=int, nargs=2, default=(192, 320))
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=None, help="default: TrainConfig's")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="YOLOP's augmentation; off by default: in a few CPU minutes on synthetic "
        "data it costs ~10 mAP50 points (12 epochs: 0.42 without, 0.33 with)",
    )
    p.add_argument("--threads", type=int, default=max(1, min(4, os.cpu_count() or 1)))
    p.add_argument("--device", default="auto")
    p.add_argument("--json", type=Path, default=RESULTS)
    return p.parse_args()


def ensure_data(args: argparse.Namespace) -> dict:
    """Reuse a set generated with the same counts and size; generate it otherwise."""
    manifest = args.data / "synth_manifest.json"
    if manifest.is_file():
        m = json.loads(manifest.read_text())
        cfg = m.get("config", m)
        if cfg.get("n_train") == args.n_train and cfg.get("n_val") == args.n_val:
            return {"generated": False, "seconds": 0.0}
    report = generate(
        SynthConfig(out=args.data, n_train=args.n_train, n_val=args.n_val, seed=0, overwrite=True),
        progress=True,
    )
    return {"generated": True, "seconds": round(report.seconds, 1)}


def train_config(args: argparse.Namespace) -> TrainConfig:
    over = {k: v for k, v in (("epochs", args.epochs), ("lr", args.lr)) if v is not None}
    return TrainConfig(
        data=str(args.data),
        out=str(args.out),
        model="yolop",
        width=0.25,
        depth=0.33,
        imgsz=tuple(args.imgsz),
        batch=args.batch,
        workers=args.workers,
        device=args.device,
        **over,
    )


def score(args: argparse.Namespace, ckpt: Path, lane: str) -> dict:
    job = EvalJob(
        checkpoint=str(ckpt),
        data=str(args.data),
        imgsz=tuple(args.imgsz),
        batch=args.batch,
        lane_labels=lane,
        workers=args.workers,
        device=args.device,
        eval=EvalConfig(det_mode="both", progress=False),
    )
    return evaluate_checkpoint(job)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    data_info = ensure_data(args)
    cfg = train_config(args)
    start = time.perf_counter()
    result = train(cfg)
    train_s = time.perf_counter() - start
    thin, wide = score(args, result.best, "thin"), score(args, result.best, "wide")
    s = thin["summary"]
    out = {
        "model": "yolop width 0.25 depth 0.33",
        "parameters": thin["checkpoint"]["parameters"],
        "data": {
            "root": str(args.data),
            "n_train": args.n_train,
            "n_val": args.n_val,
            "size": "1280x720 synthetic",
            **data_info,
        },
        "config": cfg.to_dict(),
        "train_seconds": round(train_s, 1),
        "epochs": result.epochs_done,
        "steps": result.steps,
        "device": thin["device"],
        "threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "best_epoch": next((h["epoch"] for h in reversed(result.history) if h.get("best")), None),
        "metrics": {
            "det_precision": s["det_precision"],
            "det_recall": s["det_recall"],
            "det_map50": s["det_map50"],
            "det_map50_95": s["det_map50_95"],
            "det_map50_coco": thin["det"]["coco"]["map50"],
            "det_map50_95_coco": thin["det"]["coco"]["map50_95"],
            "drivable_miou": s["drivable_miou"],
            "drivable_acc": s["drivable_acc"],
            "lane_iou_thin": s["lane_iou"],
            "lane_recall_thin": s["lane_recall"],
            "lane_iou_wide": wide["summary"]["lane_iou"],
            "lane_recall_wide": wide["summary"]["lane_recall"],
        },
        "history": [
            {
                "epoch": h["epoch"],
                "train": {k: h["train"][k] for k in ("det", "drivable", "lane")},
                "val_score": h.get("score"),
            }
            for h in result.history
        ],
        "protocol": thin["protocol"],
    }
    write_json(args.json, out)
    print(eval_text(thin))
    print(
        f"lane (widened labels): IoU {100 * out['metrics']['lane_iou_wide']:.1f}, "
        f"recall {100 * out['metrics']['lane_recall_wide']:.1f}"
    )
    print(
        f"trained {result.epochs_done} epochs / {result.steps} steps in {train_s / 60:.1f} min "
        f"on {out['device']} ({args.threads} threads); wrote {args.json}"
    )


if __name__ == "__main__":
    main()
