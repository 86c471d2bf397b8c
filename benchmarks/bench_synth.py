"""Throughput of the synthetic data generator (`mtc-synth`).

Runs the real generator (renderer, encoders, atomic writes, worker pool), prints a table and
writes benchmarks/results/bench_synth.json. Target: 1,000 train + 200 val images at 1280x720 in
under 2 minutes on 2 cores. By default it generates exactly that; with a smaller --n it projects
from two runs (n/4 and n images), so worker start-up is counted once, not scaled.

    PYTHONPATH=. python benchmarks/bench_synth.py              # the full 1,200 images
    PYTHONPATH=. python benchmarks/bench_synth.py --n 200      # quicker, projected
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from compressor.data.synth import SynthConfig, generate, image_rng
from compressor.data.synth_render import render_frame

TARGET_TRAIN, TARGET_VAL, TARGET_SECONDS = 1000, 200, 120.0
RESULTS = Path(__file__).resolve().parent / "results" / "bench_synth.json"


def timed_generate(n: int, args: argparse.Namespace, progress: bool) -> tuple[float, float]:
    """Wall seconds (as a user sees them, start-up included) and MB written, for n images."""
    n_val = round(n * TARGET_VAL / (TARGET_TRAIN + TARGET_VAL))
    with tempfile.TemporaryDirectory() as tmp:
        cfg = SynthConfig(
            out=Path(tmp) / "synth",
            n_train=n - n_val,
            n_val=n_val,
            width=args.width,
            height=args.height,
            workers=args.workers,
        )
        start = time.perf_counter()
        generate(cfg, progress=progress)
        wall = time.perf_counter() - start
        mb = sum(f.stat().st_size for f in cfg.out.rglob("*") if f.is_file()) / 2**20
    return wall, mb


def render_only_ms(width: int, height: int, n: int = 10) -> float:
    start = time.perf_counter()
    for i in range(n):
        render_frame("bench", width, height, 8, 2, image_rng(0, "train", i))
    return 1000 * (time.perf_counter() - start) / n


def measure(args: argparse.Namespace) -> dict:
    target = TARGET_TRAIN + TARGET_VAL
    wall, mb = timed_generate(args.n, args, progress=True)
    if args.n >= target:
        projected, how = wall * target / args.n, "measured"
    else:
        small = max(2, args.n // 4)
        wall_small, _ = timed_generate(small, args, progress=False)
        marginal = (wall - wall_small) / (args.n - small)  # seconds per extra image
        projected, how = wall + (target - args.n) * marginal, f"projected from {small} and {args.n}"
    return {
        "images": args.n,
        "workers": args.workers,
        "size": f"{args.width}x{args.height}",
        "wall_seconds": round(wall, 2),
        "images_per_s": round(args.n / wall, 2),
        "seconds_for_1000_train_200_val": round(projected, 1),
        "how": how,
        "target_seconds": TARGET_SECONDS,
        "meets_target": bool(projected < TARGET_SECONDS),
        "render_only_ms_per_image": round(render_only_ms(args.width, args.height), 1),
        "disk_mb_per_image": round(mb / args.n, 3),
        "cpu_count": os.cpu_count(),
        "load_avg_1min_after": round(os.getloadavg()[0], 2),
        "machine": platform.machine(),
        "numpy": np.__version__,
    }


def main() -> None:
    p = argparse.ArgumentParser(description="mtc-synth throughput")
    p.add_argument("--n", type=int, default=TARGET_TRAIN + TARGET_VAL, help="images to make")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--json", type=Path, default=RESULTS)
    args = p.parse_args()
    result = measure(args)
    print(f"\n{'metric':34s} value")
    for k, v in result.items():
        print(f"{k:34s} {v}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    tmp_json = args.json.with_name(f".{args.json.name}.tmp")
    tmp_json.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp_json, args.json)
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
