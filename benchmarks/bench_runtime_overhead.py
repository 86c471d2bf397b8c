"""The runtime's own cost (letterbox, normalise, NMS, masks, drawing) in the worst and a typical
case, and what overlapping the stages buys.

    python benchmarks/bench_runtime_overhead.py                        # stand-in ONNX only
    python benchmarks/bench_runtime_overhead.py --build DIR            # export the models (torch)
    python benchmarks/bench_runtime_overhead.py --worst DIR/yolop_worst.onnx \\
        --typical DIR/yolop_official_init.onnx --student demo_out/student.onnx \\
        [--memory-frames 10000]

Sections (each skipped when its model is not given):
- postprocess: batch 1, 1280x720 frames, `run()` with mtc-run's defaults (the sidecar's deploy
  thresholds). `--worst` is full-size YOLOP whose detect biases are raised so every one of the
  15,120 candidates scores ~1 (`--build` makes it); it is also run with the evaluation thresholds
  and no top-k (conf 0.001, IoU 0.6, 300 boxes: what mtc-run applied before deploy thresholds),
  and `--worst-nms` is the same model exported with NMS in the graph (ONNX NonMaxSuppression).
  Each also sequentially (`overlap=False`): with overlap the postprocess shares the two cores
  with inference, which inflates its wall time without changing its work.
- overlap: `--student` on a folder of 1280x720 JPEGs with `--save out.mp4`, ONNX Runtime with one
  intra-op thread, sequential (`overlap=False`) vs overlapped; wall-clock fps, everything included.
- memory: a `--memory-frames`-frame 1280x720 video through `mtc-run --save out.mp4` in a child
  process; resident memory sampled from /proc as the progress bar moves.
Prints tables, writes benchmarks/results/runtime_overhead.json with the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtime import load_artifact, run  # noqa: E402
from runtime.boxes import batched_nms  # noqa: E402
from runtime.fileio import atomic_write_text  # noqa: E402
from runtime.postprocess import Postprocessor, select_rows  # noqa: E402
from runtime.preprocess import Preprocessor  # noqa: E402
from runtime.sidecar import DeployThresholds  # noqa: E402
from runtime.spec import DEFAULT_INPUT_HW  # noqa: E402
from runtime.testing import StandinConfig, build_standin_onnx, standin_sidecar, yolop_count  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "runtime_overhead.json"
SAMPLES = ROOT.parent / "shared" / "assets" / "bdd_samples"
BEFORE = {"conf": 0.001, "iou": 0.6, "max_det": 300, "topk": 30000}  # eval thresholds, no top-k
WORST_BIAS = 20.0  # added to objectness and class logits: sigmoid(>= ~15) ~ 1 for every anchor


def road_frames(n: int, hw: tuple[int, int] = (720, 1280), seed: int = 0) -> list[np.ndarray]:
    """Real BDD frames when the shared samples are there (cycled, shifted so none repeats
    exactly), else road-like noise."""
    rng = np.random.default_rng(seed)
    h, w = hw
    base = [cv2.imread(str(p)) for p in sorted(SAMPLES.glob("*.jpg"))] if SAMPLES.is_dir() else []
    base = [cv2.resize(b, (w, h)) for b in base if b is not None]
    frames = []
    for i in range(n):
        if base:
            img = np.roll(base[i % len(base)], int(rng.integers(-40, 40)), axis=1)
        else:
            img = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
            img[h // 2 :] += 140
        frames.append(np.ascontiguousarray(img))
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


def build_models(out: Path) -> dict[str, Path]:
    """Export full-size YOLOP twice (official initialisation; and with every detect bias raised
    so all candidates score ~1). Needs torch; the runtime part of this script does not."""
    import torch

    from compressor import build_model
    from export import export_model
    from export.config import ExportConfig, HalfOptions, OnnxOptions, OutputOptions, TensorRTOptions

    paths = {}
    variants = (
        ("yolop_official_init", 0.0, False),
        ("yolop_worst", WORST_BIAS, False),
        ("yolop_worst_nms", WORST_BIAS, True),
    )
    for name, bias, nms_in_graph in variants:
        torch.manual_seed(0)
        model = build_model("yolop")
        det = model.detect
        with torch.no_grad():
            for conv in det.m:
                conv.bias.view(det.na, -1)[:, 4:] += bias
        cfg = ExportConfig(
            output=OutputOptions(str(out), name, progress=False),
            onnx=OnnxOptions(nms_in_graph=nms_in_graph),
            half=HalfOptions(enabled=False),
            tensorrt=TensorRTOptions(engine="none"),
        )
        export_model(model, cfg)
        paths[name] = out / f"{name}.onnx"
    return paths


def measure(artifact: Path, frames: list[np.ndarray], args: Any, **kw: Any) -> dict[str, Any]:
    with load_artifact(artifact, threads=kw.pop("threads", None)) as be:
        res = run(be, frames, warmup=args.warmup, progress=False, keep_results=False, **kw)
        device = be.device
    rep = res.report
    stats = {
        k: {"mean": s.mean, "p50": s.p50, "p99": s.p99, "max": s.max} for k, s in rep.stages.items()
    }
    e2e = np.asarray([r["end_to_end"] for r in rep.timeline])
    infer = np.asarray([r["infer"] for r in rep.timeline])
    return {
        "frames": rep.frames_measured,
        "device": device,
        "overlap": rep.info.overlap,
        "thresholds": rep.info.thresholds,
        "stages_ms": stats,
        "throughput_fps": rep.throughput_fps,  # frames / wall time (every mode)
        "compute_fps": rep.compute_fps,  # frames / summed end_to_end
        "overhead_pct": float(100 * (e2e - infer).mean() / e2e.mean()),
    }


def postprocess_section(args: Any, frames: list[np.ndarray]) -> list[dict[str, Any]]:
    rows = []
    seq = {"overlap": False}
    cases = [
        ("worst", args.worst, {}, "mtc-run defaults"),
        ("worst", args.worst, seq, "defaults, sequential"),
        ("worst", args.worst, {**BEFORE, **seq}, "before, sequential"),
        ("worst NMS in graph", args.worst_nms, seq, "defaults, sequential"),
        ("typical", args.typical, {}, "mtc-run defaults"),
        ("typical", args.typical, seq, "defaults, sequential"),
    ]
    for case, path, kw, settings in cases:
        if path is None:
            continue
        row = measure(path, frames, args, batch=1, **kw)
        row.update(case=case, artifact=path.name, settings=settings)
        rows.append(row)
        s = row["stages_ms"]
        print(
            f"{case:<19} {row['settings']:<21} post p50 {s['postprocess']['p50']:7.2f} "
            f"p99 {s['postprocess']['p99']:7.2f} ms | pre {s['preprocess']['mean']:.2f} | infer "
            f"{s['infer']['mean']:.1f} | e2e p99 {s['end_to_end']['p99']:.1f} ms | overhead "
            f"{row['overhead_pct']:.1f} %"
        )
    return rows


def _old_rows(det: np.ndarray) -> np.ndarray:
    """The runtime's detection postprocess before this benchmark's change, for the comparison:
    evaluation thresholds, up to 30,000 candidates, `batched_nms`."""
    d = det[det[:, 4] > BEFORE["conf"]].astype(np.float64)
    if len(d) > 30000:
        d = d[np.argsort(-d[:, 4], kind="stable")[:30000]]
    return d[batched_nms(d[:, :4], d[:, 4], d[:, 5], BEFORE["iou"], BEFORE["max_det"])]


def nms_micro_section(args: Any, frames: list[np.ndarray]) -> dict[str, Any] | None:
    """The postprocess alone on the worst model's real outputs, one thread, nothing else of ours
    running: old detection path vs the new one, and the whole new Postprocessor call (boxes
    mapped back, masks left lazy as mtc-run leaves them when it does not draw). Wall time and
    this thread's CPU time: on a shared machine the wall p99 is mostly waiting for a core."""
    if args.worst is None:
        return None
    with load_artifact(args.worst) as be:
        sc = be.sidecar
        assert sc is not None
        batch, lbs = Preprocessor(sc.preprocess, 1)([frames[0]])
        outputs = be.infer(batch)
    det = outputs["det"][0]
    t = sc.det.deploy if sc.det else DeployThresholds()
    post = Postprocessor(sc, t)
    out: dict[str, Any] = {"candidates": int(len(det)), "above_0.25": int((det[:, 4] > 0.25).sum())}
    cases = (
        ("before: eval thresholds, batched_nms", lambda: len(_old_rows(det))),
        ("deploy: select_rows", lambda: len(select_rows(det, t))),
        ("deploy: whole Postprocessor", lambda: len(post(outputs, lbs, [0])[0].scores)),
    )
    for name, fn in cases:
        fn()
        wall, cpu = [], []
        for _ in range(args.micro_repeats):
            t0, c0 = time.perf_counter(), time.thread_time()
            kept = fn()
            wall.append((time.perf_counter() - t0) * 1e3)
            cpu.append((time.thread_time() - c0) * 1e3)
        row = {"kept": int(kept)}
        for label, v in (("wall", np.asarray(wall)), ("cpu", np.asarray(cpu))):
            row[f"{label}_p50"] = float(np.median(v))
            row[f"{label}_p99"] = float(np.percentile(v, 99))
        out[name] = row
        print(
            f"{name:<38} wall p50 {row['wall_p50']:7.2f} p99 {row['wall_p99']:7.2f} | cpu p50 "
            f"{row['cpu_p50']:7.2f} p99 {row['cpu_p99']:7.2f} ms | {kept} of {len(det)} kept"
        )
    return out


def write_jpegs(folder: Path, frames: list[np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:05d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return folder


def overlap_section(args: Any, tmp: Path) -> dict[str, Any] | None:
    if args.student is None or args.overlap_frames < 1:
        return None
    folder = write_jpegs(tmp / "jpegs", road_frames(args.overlap_frames, seed=1))
    rows = []
    for rep in range(args.repeats):
        for overlap in (False, True):
            row = measure(
                args.student,
                str(folder),  # type: ignore[arg-type]
                args,
                batch=1,
                overlap=overlap,
                save=str(tmp / f"out_{rep}_{int(overlap)}.mp4"),
                threads=1,
            )
            row["repeat"] = rep
            rows.append(row)
            print(
                f"{'overlapped' if overlap else 'sequential':<11} run {rep}: "
                f"{row['throughput_fps']:.2f} fps (frames / wall time)"
            )
    seq = [r["throughput_fps"] for r in rows if not r["overlap"]]
    ovl = [r["throughput_fps"] for r in rows if r["overlap"]]
    ratios = [o / s for s, o in zip(seq, ovl)]
    print(f"overlapped / sequential: {', '.join(f'{r:.2f}x' for r in ratios)}")
    return {"artifact": args.student.name, "rows": rows, "speedup": ratios}


def _rss_mb(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", text).group(1)) / 1024  # type: ignore[union-attr]


def memory_section(args: Any, tmp: Path) -> dict[str, Any] | None:
    if not args.memory_frames or args.student is None:
        return None
    video = tmp / "long.mp4"
    base = road_frames(8, seed=2)
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"mp4v"), 30, (1280, 720))
    for i in range(args.memory_frames):
        writer.write(base[i % len(base)])
    writer.release()
    cmd = [
        sys.executable,
        "-m",
        "runtime.cli",
        str(args.student),
        "--source",
        str(video),
        "--save",
        str(tmp / "long_out.mp4"),
        "--report",
        str(tmp / "long.json"),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env)
    samples: list[tuple[int, float]] = []
    buf = b""
    assert proc.stderr is not None
    while True:
        chunk = os.read(proc.stderr.fileno(), 4096)
        if not chunk:
            break
        buf = (buf + chunk)[-400:]
        done = re.findall(rb"(\d+)/%d" % args.memory_frames, buf)
        if done:
            try:
                samples.append((int(done[-1]), _rss_mb(proc.pid)))
            except (FileNotFoundError, ProcessLookupError):
                break
    code = proc.wait()
    after100 = next(m for n, m in samples if n >= 100)
    later = [m for n, m in samples if n >= 100]
    out = {
        "frames": args.memory_frames,
        "exit_code": code,
        "rss_mb_after_100": after100,
        "rss_mb_max_after_100": max(later),
        "rss_mb_last": samples[-1][1],
        "growth_mb": max(later) - after100,
        "samples": samples[:: max(1, len(samples) // 200)],
    }
    print(
        f"memory: {args.memory_frames} frames, RSS after 100 frames {after100:.1f} MB, max after "
        f"{max(later):.1f} MB (+{out['growth_mb']:.1f} MB), exit {code}"
    )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--build", type=Path, default=None, help="export the YOLOP models here first")
    p.add_argument("--worst", type=Path, default=None, help="YOLOP ONNX, every candidate ~1")
    p.add_argument("--worst-nms", type=Path, default=None, help="the same with NMS in the graph")
    p.add_argument("--typical", type=Path, default=None, help="a YOLOP ONNX, ordinary scores")
    p.add_argument("--student", type=Path, default=None, help="the demo's student ONNX")
    p.add_argument("--frames", type=int, default=60, help="frames per postprocess run")
    p.add_argument("--overlap-frames", type=int, default=120, help="JPEGs (0: skip)")
    p.add_argument("--repeats", type=int, default=2, help="sequential/overlapped pairs")
    p.add_argument(
        "--memory-frames", type=int, default=0, help="frames of the long video (0: skip)"
    )
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--micro-repeats", type=int, default=200, help="NMS-alone repetitions")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    if args.build is not None:
        built = build_models(args.build)
        args.worst = args.worst or built["yolop_worst"]
        args.worst_nms = args.worst_nms or built["yolop_worst_nms"]
        args.typical = args.typical or built["yolop_official_init"]
    frames = road_frames(args.frames)
    result: dict[str, Any] = {"load_average_start": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        if args.worst is None and args.typical is None:
            args.typical = standin(Path(tmp))
        result["nms_alone"] = nms_micro_section(args, frames)
        result["postprocess"] = postprocess_section(args, frames)
        result["overlap"] = overlap_section(args, Path(tmp))
        result["memory"] = memory_section(args, Path(tmp))
    result["load_average_end"] = os.getloadavg()
    result["when"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    print(f"load average {result['load_average_start']} -> {result['load_average_end']}")
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
