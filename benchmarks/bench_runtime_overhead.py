"""How much of a frame's time is the runtime's own (letterbox, normalise, NMS, mask resize) rather
than the backend's, and what batching buys in throughput.

    python benchmarks/bench_runtime_overhead.py                   # stand-in ONNX, YOLOP-sized I/O
    python benchmarks/bench_runtime_overhead.py --onnx yolop.onnx # a real export (sidecar beside it)

Overhead = end_to_end - infer (the backend call), per frame, at batch 1. The stand-in has YOLOP's
output sizes at 640x384 (15120 det rows, two 384x640 masks) and a small conv stack, so its infer
time is far below a real model's: its overhead % is an upper bound; pass --onnx for the real one.
Prints a table and writes benchmarks/results/runtime_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtime import load_artifact, run  # noqa: E402
from runtime.fileio import atomic_write_text  # noqa: E402
from runtime.spec import DEFAULT_INPUT_HW  # noqa: E402
from runtime.testing import StandinConfig, build_standin_onnx, standin_sidecar, yolop_count  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "runtime_overhead.json"


def synthetic_frames(n: int, hw: tuple[int, int], seed: int = 0) -> list[np.ndarray]:
    """Road-like frames: a bright lower half (drivable in the stand-in), noise for texture."""
    rng = np.random.default_rng(seed)
    h, w = hw
    frames = []
    for _ in range(n):
        img = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
        img[h // 2 :] += 140
        frames.append(img)
    return frames


def standin(folder: Path) -> Path:
    cfg = StandinConfig(
        input_hw=DEFAULT_INPUT_HW,
        num_candidates=yolop_count(DEFAULT_INPUT_HW),
        conv_channels=16,
        max_det=300,
    )
    path = build_standin_onnx(folder / "standin_yolop_io.onnx", cfg)
    standin_sidecar(path, cfg)
    return path


def measure(artifact: Path, frames: list[np.ndarray], batch: int, args: Any) -> dict[str, Any]:
    with load_artifact(artifact, providers=args.providers) as be:
        res = run(be, frames, batch=batch, warmup=args.warmup, progress=False, keep_results=False)
        device = be.device
    rep = res.report
    e2e = np.asarray([r["end_to_end"] for r in rep.timeline])
    infer = np.asarray([r["infer"] for r in rep.timeline])
    mean = {k: s.mean for k, s in rep.stages.items()}
    return {
        "batch": batch,
        "frames": rep.frames_measured,
        "device": device,
        "throughput_fps": rep.throughput_fps,
        "ms_per_frame_amortised": float(e2e.mean() / batch),
        "mean_ms": mean,
        "p99_end_to_end_ms": rep.stages["end_to_end"].p99,
        "overhead_ms": float((e2e - infer).mean()),
        "overhead_pct": float(100 * (e2e - infer).mean() / e2e.mean()),
    }


def table(rows: list[dict[str, Any]]) -> str:
    head = ("batch", "pre ms", "infer ms", "post ms", "e2e ms", "overhead", "fps")
    lines = ["".join(f"{h:>11}" for h in head), "-" * 11 * len(head)]
    for r in rows:
        m = r["mean_ms"]
        vals = (r["batch"], m["preprocess"], m["infer"], m["postprocess"], m["end_to_end"])
        lines.append(
            f"{vals[0]:>11}"
            + "".join(f"{v:>11.2f}" for v in vals[1:])
            + f"{r['overhead_pct']:>10.1f}%{r['throughput_fps']:>11.1f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--onnx", type=Path, default=None, help="real export (sidecar beside it)")
    p.add_argument("--frames", type=int, default=48)
    p.add_argument("--frame-hw", type=int, nargs=2, default=(720, 1280))
    p.add_argument("--batch", type=int, default=4, help="batch compared with batch 1")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--providers", default=None, help="onnxruntime providers, e.g. cuda,cpu")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    frames = synthetic_frames(args.frames, tuple(args.frame_hw))
    with tempfile.TemporaryDirectory() as tmp:
        artifact = args.onnx or standin(Path(tmp))
        rows = [measure(artifact, frames, b, args) for b in (1, args.batch)]
    speedup = rows[1]["throughput_fps"] / rows[0]["throughput_fps"]
    print(f"{artifact.name} on {rows[0]['device']}, frames {args.frame_hw[1]}x{args.frame_hw[0]}")
    print(table(rows))
    print(
        f"batch {args.batch} vs 1 throughput: x{speedup:.2f}; "
        f"runtime overhead at batch 1: {rows[0]['overhead_pct']:.1f}% of end-to-end"
    )
    result = {
        "artifact": artifact.name if args.onnx else "stand-in (YOLOP I/O sizes, 3-conv body)",
        "frame_hw": list(args.frame_hw),
        "rows": rows,
        "throughput_speedup": speedup,
        "overhead_pct_batch1": rows[0]["overhead_pct"],
    }
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
