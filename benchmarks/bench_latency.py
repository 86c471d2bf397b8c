"""Teacher vs student latency per backend at several batch sizes, measured in one run.

Backends: torch eager (the checkpoint), ONNX Runtime on the FP32 ONNX, ONNX Runtime on the FP16
ONNX, and the TensorRT FP16 engine where one was built. Each cell is the median over `--iters`
timed calls after `--warmup` calls, of the backend alone (no pre/post-processing: the runtime's
own overhead is bench_runtime_overhead.py's job). Timings on a shared CPU are noisy; compare the
student/teacher ratios of one run, not absolute numbers across runs.

    python benchmarks/bench_latency.py --demo-out demo_out --batches 1 4 8
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def _time(fn: Callable[[], object], warmup: int, iters: int) -> float:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def torch_eager(ckpt: Path, batch: int, hw: tuple[int, int], warmup: int, iters: int) -> float:
    import torch

    from compressor import load_checkpoint

    model, _ = load_checkpoint(ckpt)
    model.eval()
    x = torch.randn(batch, 3, *hw)
    with torch.inference_mode():
        return _time(lambda: model(x), warmup, iters)


def artifact(path: Path, batch: int, hw: tuple[int, int], warmup: int, iters: int) -> float:
    from runtime import load_artifact

    x = np.random.default_rng(0).standard_normal((batch, 3, *hw)).astype(np.float32)
    with load_artifact(path) as be:
        lo, hi = be.input_spec.batch_min or 1, be.input_spec.batch_max or batch
        if not lo <= batch <= hi:
            return float("nan")
        return _time(lambda: be.infer(x), warmup, iters)


def _cells(demo: Path, model: str) -> dict[str, tuple[Callable, Path]]:
    exp = demo / "export"
    ckpt = demo / ("teacher/best.pt" if model == "teacher" else "student/student.pt")
    if model == "teacher" and not ckpt.exists():
        ckpt = demo / "teacher/last.pt"
    cells = {
        "torch eager fp32": (torch_eager, ckpt),
        "ORT fp32": (artifact, exp / f"{model}.onnx"),
        "ORT fp16-onnx": (artifact, exp / f"{model}_fp16.onnx"),
        "TensorRT fp16": (artifact, exp / f"{model}_fp16.engine"),
    }
    return {k: v for k, v in cells.items() if v[1].exists()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--demo-out", default="demo_out", type=Path)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--json", type=Path, default=Path("benchmarks/results/latency.json"))
    ap.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch intra-op threads (2 on a busy 2-core box thrashed: ~20x slower)",
    )
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.torch_threads)
    report = json.loads((a.demo_out / "report.json").read_text())
    hw = tuple(report["imgsz"])
    rows = []
    for backend in _cells(a.demo_out, "teacher"):
        for b in a.batches:
            row = {"backend": backend, "batch": b}
            for model in ("teacher", "student"):
                fn, path = _cells(a.demo_out, model)[backend]
                ms = fn(path, b, hw, a.warmup, a.iters)
                row[f"{model}_ms_per_frame"] = ms / b
            row["student_speedup"] = row["teacher_ms_per_frame"] / row["student_ms_per_frame"]
            rows.append(row)
    head = f"{'backend':<18}{'batch':>6}{'teacher ms/f':>14}{'student ms/f':>14}{'speed-up':>10}"
    lines = [head, "-" * len(head)] + [
        f"{r['backend']:<18}{r['batch']:>6}{r['teacher_ms_per_frame']:>14.2f}"
        f"{r['student_ms_per_frame']:>14.2f}{r['student_speedup']:>9.2f}x"
        for r in rows
    ]
    print("\n".join(lines))
    out = {
        "machine": f"{platform.processor() or platform.machine()} {platform.system()}",
        "input_hw": list(hw),
        "warmup": a.warmup,
        "iters": a.iters,
        "rows": rows,
        "params": report["size"],
    }
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(out, indent=2) + "\n")
    md = [
        "| backend | batch | teacher ms/frame | student ms/frame | speed-up |",
        "|---|---|---|---|---|",
    ]
    md += [
        f"| {r['backend']} | {r['batch']} | {r['teacher_ms_per_frame']:.2f} | "
        f"{r['student_ms_per_frame']:.2f} | {r['student_speedup']:.2f}x |"
        for r in rows
    ]
    a.json.with_suffix(".md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
