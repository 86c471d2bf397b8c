"""Several cameras in one run vs the same cameras one after another; sequential vs overlapped
stages; the host preprocess a `--input uint8` export saves; memory over a long multi-camera run.

    python benchmarks/bench_runtime_cameras.py --build DIR      # export the models first (torch)
    python benchmarks/bench_runtime_cameras.py --artifact DIR/yolop_s.onnx \\
        --uint8 DIR/yolop_s_u8.onnx [--frames 60] [--repeats 2] [--memory-frames 1000]

All on 1280x720 videos (the shared BDD samples, shifted frame to frame), ONNX Runtime CPU.
- cameras: for 1, 2 and 4 cameras of `--frames` frames each: one run with every camera (batch =
  camera count) vs one single-camera run (batch 1) per camera, one after another; both with the
  stages sequential and overlapped; pairs interleaved `--repeats` times. Throughput = frames /
  wall time of the measured streams (report.json's `throughput_fps` definition; the run's
  warm-up excluded), and the ratio multi / one-after-another.
- save: one camera with `--save out.mp4`, ONNX Runtime on 1 thread: overlapped vs sequential.
- preprocess: Preprocessor per 1280x720 frame, float32 NCHW (letterbox + normalise) vs uint8
  NHWC (letterbox only; the graph does the rest), interleaved, median of many calls.
- memory: 4 cameras x `--memory-frames` frames in one run; RSS after batch 100 and the highest
  after it.
Prints tables, writes benchmarks/results/runtime_cameras.json with the load average and cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_runtime_overhead import road_frames  # noqa: E402

from runtime import load_artifact, run  # noqa: E402
from runtime import pipeline as pipeline_module  # noqa: E402
from runtime.fileio import atomic_write_text  # noqa: E402
from runtime.preprocess import Preprocessor  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "runtime_cameras.json"


def build_models(out: Path) -> tuple[Path, Path]:
    """A student-sized YOLOP (width 0.25, depth 0.33, 192x320, official initialisation), exported
    with the float input and with `--input uint8`. Needs torch; the timing part does not."""
    import torch

    from compressor import build_model
    from export import export_model
    from export.config import (
        ExportConfig,
        HalfOptions,
        InputOptions,
        OutputOptions,
        TensorRTOptions,
    )

    paths = []
    for name, dtype in (("yolop_s", "float32"), ("yolop_s_u8", "uint8")):
        torch.manual_seed(0)
        model = build_model("yolop", width=0.25, depth=0.33).eval()
        cfg = ExportConfig(
            output=OutputOptions(str(out), name, overwrite=True, progress=False),
            input=InputOptions((192, 320), max_batch=8, dtype=dtype),
            half=HalfOptions(enabled=False),
            tensorrt=TensorRTOptions(engine="none"),
        )
        export_model(model, cfg)
        paths.append(out / f"{name}.onnx")
    return paths[0], paths[1]


def write_video(path: Path, n: int, seed: int) -> Path:
    frames = road_frames(min(n, 24), seed=seed)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 30, (1280, 720))
    for i in range(n):
        writer.write(frames[i % len(frames)])
    writer.release()
    return path


def timed_run(be: Any, videos: list[Path], **kw: Any) -> dict[str, Any]:
    spec = {"frames": str(videos[0])} if len(videos) == 1 else {"sources": [str(v) for v in videos]}
    t0, c0 = time.perf_counter(), time.process_time()
    res = run(be, **spec, progress=False, keep_results=False, warmup=2, **kw)
    outer = time.perf_counter() - t0
    cores = (time.process_time() - c0) / outer  # CPU seconds of this process per wall second
    rep = res.report
    return {
        "frames": rep.info.frames_processed,
        "per_camera": [s["frames"] for s in rep.sources],
        "measured_wall_s": rep.info.measured_wall_s,
        "outer_wall_s": outer,
        "throughput_fps": rep.throughput_fps,
        "compute_fps": rep.compute_fps,
        "cores_used": cores,
        "p50_ms": [s["p50_ms"] for s in rep.sources],
        "p99_ms": [s["p99_ms"] for s in rep.sources],
    }


def cameras_section(
    art: Path, videos: list[Path], repeats: int, threads: int
) -> list[dict[str, Any]]:
    rows = []
    with load_artifact(art, threads=threads) as be:
        for rep in range(repeats):
            for n in (1, 2, 4):
                for overlap in (False, True):
                    multi = timed_run(be, videos[:n], overlap=overlap)
                    singles = [timed_run(be, [v], overlap=overlap, batch=1) for v in videos[:n]]
                    frames = sum(s["frames"] for s in singles)
                    one_by_one = frames / sum(s["measured_wall_s"] for s in singles)
                    outer = frames / sum(s["outer_wall_s"] for s in singles)
                    row = {
                        "repeat": rep,
                        "cameras": n,
                        "overlap": overlap,
                        "multi": multi,
                        "singles": singles,
                        "one_after_another_fps": one_by_one,
                        "ratio": multi["throughput_fps"] / one_by_one,
                        "ratio_outer_wall": (multi["frames"] / multi["outer_wall_s"]) / outer,
                    }
                    rows.append(row)
                    print(
                        f"run {rep} {n} camera(s) {'overlapped' if overlap else 'sequential':<10} "
                        f"one run (batch {n}) {multi['throughput_fps']:6.1f} fps "
                        f"[{'/'.join(map(str, multi['per_camera']))} frames] | one after another "
                        f"(batch 1) {one_by_one:6.1f} fps | {row['ratio']:.2f}x "
                        f"(outer wall {row['ratio_outer_wall']:.2f}x)"
                    )
    print(
        "median over the repeats (one run with every camera / the same cameras one after another):"
    )
    for n in (1, 2, 4):
        for overlap in (False, True):
            cell = [r for r in rows if r["cameras"] == n and r["overlap"] == overlap]
            ratios = sorted(r["ratio"] for r in cell)
            multi = float(np.median([r["multi"]["throughput_fps"] for r in cell]))
            single = float(np.median([r["one_after_another_fps"] for r in cell]))
            print(
                f"  {n} camera(s) {'overlapped' if overlap else 'sequential':<10} "
                f"{multi:6.1f} vs {single:6.1f} fps: median {float(np.median(ratios)):.2f}x "
                f"(range {ratios[0]:.2f}-{ratios[-1]:.2f}x, {len(ratios)} pairs)"
            )
    return rows


def save_section(art: Path, video: Path, tmp: Path, repeats: int) -> dict[str, Any]:
    rows = []
    with load_artifact(art, threads=1) as be:
        for rep in range(repeats):
            for overlap in (False, True):
                out = str(tmp / f"save_{rep}_{int(overlap)}.mp4")
                r = timed_run(be, [video], overlap=overlap, batch=1, save=out)
                r.update(repeat=rep, overlap=overlap)
                rows.append(r)
    seq = [r["throughput_fps"] for r in rows if not r["overlap"]]
    ovl = [r["throughput_fps"] for r in rows if r["overlap"]]
    ratios = [o / s for s, o in zip(seq, ovl)]
    for mode in (False, True):
        used = [r["cores_used"] for r in rows if r["overlap"] == mode]
        print(
            f"  {'overlapped' if mode else 'sequential'}: {np.mean(used):.2f} cores used (process CPU / wall)"
        )
    for s, o, q in zip(seq, ovl, ratios):
        print(
            f"one camera --save out.mp4, 1 thread: sequential {s:.1f} fps, overlapped {o:.1f} fps: {q:.2f}x"
        )
    return {"rows": rows, "ratios": ratios}


def preprocess_section(float_art: Path, u8_art: Path, calls: int) -> dict[str, Any]:
    from runtime.sidecar import read_sidecar

    frames = road_frames(8, seed=3)
    sf, su = read_sidecar(float_art), read_sidecar(u8_art)
    fp = Preprocessor(sf.preprocess, 1)
    up = Preprocessor(su.preprocess, 1, "uint8", layout="NHWC")
    times: dict[str, list[float]] = {"float32 NCHW": [], "uint8 NHWC": []}
    for i in range(calls):  # interleaved
        for name, prep in (("float32 NCHW", fp), ("uint8 NHWC", up)):
            t0 = time.perf_counter()
            prep([frames[i % len(frames)]])
            times[name].append((time.perf_counter() - t0) * 1e3)
    out = {
        k: {"p50_ms": float(np.median(v)), "mean_ms": float(np.mean(v))} for k, v in times.items()
    }
    saved = out["float32 NCHW"]["p50_ms"] - out["uint8 NHWC"]["p50_ms"]
    out["saved_p50_ms"] = saved
    out["input_hw"] = list(sf.preprocess.input_hw)
    print(
        f"preprocess of one 1280x720 frame to {sf.preprocess.input_hw}: float32 "
        f"{out['float32 NCHW']['p50_ms']:.3f} ms, uint8 {out['uint8 NHWC']['p50_ms']:.3f} ms "
        f"(p50): {saved:.3f} ms saved per frame"
    )
    with load_artifact(float_art) as fb, load_artifact(u8_art) as ub:  # and the graph's cost
        ft, _ = fp([frames[0]])
        ut, _ = up([frames[0]])
        for be, batch in ((fb, ft), (ub, ut)):
            be.infer(batch)
        inf = {"float32 NCHW": [], "uint8 NHWC": []}
        for _ in range(max(20, calls // 10)):
            for name, be, batch in (("float32 NCHW", fb, ft), ("uint8 NHWC", ub, ut)):
                t0 = time.perf_counter()
                be.infer(batch)
                inf[name].append((time.perf_counter() - t0) * 1e3)
    out["infer_p50_ms"] = {k: float(np.median(v)) for k, v in inf.items()}
    print(
        "inference p50 (the uint8 graph does the cast + normalisation): "
        + ", ".join(f"{k} {v:.2f} ms" for k, v in out["infer_p50_ms"].items())
    )
    return out


def _rss_mb() -> float:
    text = Path("/proc/self/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", text).group(1)) / 1024  # type: ignore[union-attr]


def memory_section(art: Path, tmp: Path, n: int) -> dict[str, Any] | None:
    if n <= 0:
        return None
    videos = [write_video(tmp / f"long{k}.mp4", n, seed=10 + k) for k in range(4)]
    samples: list[tuple[int, float]] = []
    original = pipeline_module._Runner._complete

    def spy(self: Any, b: Any) -> None:
        original(self, b)
        if self.recorder.batches % 25 == 0:
            samples.append((self.recorder.batches, _rss_mb()))

    pipeline_module._Runner._complete = spy  # type: ignore[method-assign]
    try:
        with load_artifact(art, threads=1) as be:
            r = timed_run(be, videos, save=str(tmp / "long_out"))
    finally:
        pipeline_module._Runner._complete = original  # type: ignore[method-assign]
    after = [m for b, m in samples if b >= 100]
    out = {
        "cameras": 4,
        "frames_per_camera": n,
        "per_camera": r["per_camera"],
        "rss_mb_at_batch_100": after[0],
        "rss_mb_max_after": max(after),
        "growth_mb": max(after) - after[0],
        "samples": samples,
    }
    print(
        f"memory: 4 cameras x {n} frames with --save (folder), RSS at batch 100 {after[0]:.1f} MB, "
        f"highest after {max(after):.1f} MB (+{out['growth_mb']:.1f} MB)"
    )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--build", type=Path, default=None, help="export the two models here first")
    p.add_argument("--artifact", type=Path, default=None, help="float-input ONNX")
    p.add_argument("--uint8", type=Path, default=None, help="the same exported with --input uint8")
    p.add_argument("--frames", type=int, default=60, help="frames per camera")
    p.add_argument("--repeats", type=int, default=2, help="interleaved repetitions")
    p.add_argument("--preprocess-calls", type=int, default=400)
    p.add_argument("--memory-frames", type=int, default=0, help="per camera (0: skip)")
    p.add_argument("--skip-cameras", action="store_true")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="ONNX Runtime intra-op threads for the camera runs (1: its spinning threads lose "
        "badly on a shared 2-core host)",
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    if args.build is not None:
        args.artifact, args.uint8 = build_models(args.build)
    if args.artifact is None:
        p.error("give --artifact (and --uint8), or --build DIR")
    result: dict[str, Any] = {
        "load_average_start": os.getloadavg(),
        "cores": os.cpu_count(),
        "artifact": args.artifact.name,
    }
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        videos = [write_video(tmp / f"cam{k}.mp4", args.frames, seed=k) for k in range(4)]
        if not args.skip_cameras:
            result["cameras"] = cameras_section(args.artifact, videos, args.repeats, args.threads)
            result["threads"] = args.threads
            result["save"] = save_section(args.artifact, videos[0], tmp, args.repeats)
        if args.uint8 is not None:
            result["preprocess"] = preprocess_section(
                args.artifact, args.uint8, args.preprocess_calls
            )
        result["memory"] = memory_section(args.artifact, tmp, args.memory_frames)
    result["load_average_end"] = os.getloadavg()
    result["when"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    print(f"load average {result['load_average_start']} -> {result['load_average_end']}")
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
