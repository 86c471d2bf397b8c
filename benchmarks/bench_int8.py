"""INT8 with the per-task guard on a trained model: for each calibration method, export a
checkpoint with `--int8`, and report per task the FP16 and INT8 exports' deltas against the FP32
export (scored through the runtime on the val split), the share of conv FLOPs left in INT8, the
layer groups the guard kept in FP16 and the export's wall time. Prints a table, writes JSON.

A checkpoint and its data set can be given (e.g. the demo's student); otherwise a synthetic set
is generated and a model trained on it for a few epochs, so the metrics mean something:

    PYTHONPATH=. python benchmarks/bench_int8.py --ckpt demo_out/student/student.pt \\
        --data demo_out/data --methods max percentile entropy --json benchmarks/results/int8_demo.json
    PYTHONPATH=. python benchmarks/bench_int8.py --model yolop --width 1 --depth 1 --epochs 3 \\
        --json benchmarks/results/int8_yolop_full.json
    PYTHONPATH=. python benchmarks/bench_int8.py --model twinlitenet --imgsz 192 320 --epochs 8 \\
        --json benchmarks/results/int8_twinlitenet.json
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
from compressor.train import TrainConfig, train
from export import export_model
from export.config import (
    ExportConfig,
    HalfOptions,
    InputOptions,
    Int8Options,
    OutputOptions,
    TensorRTOptions,
)
from export.errors import Int8Error
from runtime.fileio import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("det_recall", "det_map50", "drivable_miou", "lane_iou")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", type=Path, help="checkpoint to export (default: train one)")
    p.add_argument("--data", type=Path, help="data set root (default: a synthetic one in --out)")
    p.add_argument("--out", type=Path, default=ROOT / "out" / "bench_int8")
    p.add_argument("--model", default="yolop")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--depth", type=float, default=1.0)
    p.add_argument("--imgsz", type=int, nargs=2, default=(192, 320))
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--n-train", type=int, default=128)
    p.add_argument("--n-val", type=int, default=48)
    p.add_argument(
        "--methods",
        nargs="+",
        default=["auto"],
        help="calibration methods; percentile:P for another percentile",
    )
    p.add_argument("--calib-images", type=int, default=128)
    p.add_argument("--guard-images", type=int, default=None)
    p.add_argument("--guard-data", type=Path, default=None, help="default: --data")
    p.add_argument(
        "--heldout",
        type=Path,
        default=None,
        help="also score the FP32 and INT8 ONNX on this data set's val split (not seen by the guard)",
    )
    p.add_argument(
        "--fp16-onnx",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also make (and score) the FP16 ONNX",
    )
    p.add_argument("--lr", type=float, default=None, help="default: TrainConfig's")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "int8.json")
    return p.parse_args()


def trained(args: argparse.Namespace) -> tuple[Path, Path, dict]:
    data = args.data or args.out / "data"
    if not (data / "images").is_dir():
        generate(
            SynthConfig(out=data, n_train=args.n_train, n_val=args.n_val, seed=0, workers=0),
            progress=True,
        )
    if args.ckpt:
        return args.ckpt, data, {"checkpoint": str(args.ckpt)}
    run = args.out / f"{args.model}_w{args.width}_d{args.depth}"
    last = run / "last.pt"
    start = time.perf_counter()
    done = json.loads((run / "metrics.json").read_text())["epochs_done"] if last.is_file() else 0
    if last.is_file() and done < args.epochs:  # a shorter earlier run: train on from it
        train(TrainConfig(resume=str(last), epochs=args.epochs, out=str(run), data=str(data)))
    elif not last.is_file():
        kw = {"width": args.width, "depth": args.depth} if args.model == "yolop" else {}
        train(
            TrainConfig(
                data=str(data),
                out=str(run),
                model=args.model,
                imgsz=tuple(args.imgsz),
                epochs=args.epochs,
                batch=8,
                workers=0,
                augment=False,
                overwrite=True,
                **kw,
                **({"lr": args.lr} if args.lr else {}),
            )
        )
    info = {
        "model": args.model,
        "width": args.width,
        "depth": args.depth,
        "imgsz": list(args.imgsz),
        "epochs": args.epochs,
        "train_s": round(time.perf_counter() - start, 1),
    }
    return last, data, info


def export_once(ckpt: Path, data: Path, out: Path, spec: str, args: argparse.Namespace) -> dict:
    method, _, pct = spec.partition(":")
    name = f"int8_{method}{pct.replace('.', '_')}"
    cfg = ExportConfig(
        output=OutputOptions(str(out), name, overwrite=True),
        input=InputOptions(max_batch=8),
        half=HalfOptions(enabled=args.fp16_onnx),
        tensorrt=TensorRTOptions(engine="none"),
        int8=Int8Options(
            enabled=True,
            calib_data=str(data),
            calib_images=args.calib_images,
            calibration=method,
            percentile=float(pct) if pct else Int8Options.percentile,
            guard_images=args.guard_images,
            guard_data=str(args.guard_data) if args.guard_data else None,
        ),
    )
    start = time.perf_counter()
    try:
        res = export_model(str(ckpt), cfg)
        error = None
    except Int8Error as e:
        res, error = e.result, str(e)
    q = res.summary.get("int8", {})
    chosen = q.get("calibration")
    if chosen and q.get("percentile") is not None:
        chosen = f"{chosen} {q['percentile']:g}"
    return {
        "method": spec if method != "auto" else f"auto ({chosen})",
        "calibration_trials": q.get("calibration_trials"),
        "heldout": heldout(res, args.heldout) if args.heldout and q.get("deltas") else None,
        "export_s": round(time.perf_counter() - start, 1),
        "int8_stage_s": q.get("time_s"),
        "error": error,
        "scores_fp32": q.get("scores", {}).get("fp32"),
        "deltas_fp16": q.get("deltas_by_export", {}).get("fp16"),
        "deltas_int8_all": q.get("all_int8_deltas"),
        "deltas_int8": q.get("deltas"),
        "quantized_conv_share": q.get("quantized_conv_share"),
        "quantized_flops_share": q.get("quantized_flops_share"),
        "fallback": [f["group"] for f in q.get("fallback", [])],
        "models_scored": q.get("models_scored"),
        "guard_source": q.get("guard_source"),
    }


def heldout(res, data: Path) -> dict:
    """FP32 and INT8 ONNX scored by `mtc-eval`'s API on `data`'s val split, and their deltas."""
    from compressor.train.eval_artifact import evaluate_artifact
    from compressor.train.eval_checkpoint import EvalJob
    from compressor.train.evaluate import EvalConfig

    scores = {}
    for kind in ("onnx", "onnx_int8"):
        job = EvalJob(str(res.artifact(kind)), str(data), eval=EvalConfig(progress=False))
        scores[kind] = evaluate_artifact(job)["summary"]
    d = {k: round(100 * (scores["onnx_int8"][k] - scores["onnx"][k]), 3) for k in KEYS}
    return {"data": str(data), "fp32": {k: scores["onnx"][k] for k in KEYS}, "deltas": d}


def _fmt(d: dict | None) -> str:
    short = {"det_recall": "R", "det_map50": "mAP50", "drivable_miou": "DA", "lane_iou": "LL"}
    return ", ".join(f"{short[k]} {d[k]:+.2f}" for k in KEYS if d and k in d) or "n/a"


def table(rows: list[dict]) -> str:
    """Deltas in points vs the FP32 export: R recall, mAP50, DA drivable mIoU, LL lane IoU."""
    lines = [
        "| calibration | all convs INT8 | guarded INT8 | conv FLOPs in INT8 | kept FP16 | export s |",
        "|---|---|---|---:|---|---:|",
    ]
    for r in rows:
        share = r["quantized_flops_share"]
        lines.append(
            f"| {r['method']} | {_fmt(r['deltas_int8_all'])} | {_fmt(r['deltas_int8'])} | "
            f"{100 * share:.0f}% | {', '.join(r['fallback']) or '-'} | {r['export_s']:.0f} |"
            if share is not None
            else f"| {r['method']} | failed: {r['error']} | | | | {r['export_s']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(max(1, args.threads))
    ckpt, data, info = trained(args)
    rows = [export_once(ckpt, data, args.out / "export", m, args) for m in args.methods]
    text = table(rows)
    print(text)
    payload = {
        "source": info,
        "data": str(data),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "note": "deltas in points vs the FP32 export, scored through the runtime (ONNX Runtime "
        "CPU) on the val split; INT8 = Q/DQ emulated in float by ONNX Runtime CPU",
        "rows": rows,
        "table": text,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.json, json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
