"""Where NMS runs, and what inference + postprocess cost per frame for each choice:

- numpy: ONNX without NMS in ONNX Runtime, the runtime's numpy NMS (top-k, class-aware, early exit)
- onnx:  ONNX NonMaxSuppression in the graph (mtc-export --nms-in-graph), ONNX Runtime
- efficient / inms: TensorRT engines with EfficientNMS_TRT / INMSLayer appended
  (`runtime.tensorrt --trt-nms`), only where TensorRT and a GPU are there; otherwise the row says
  "not measured: no TensorRT" and carries no number.

    python benchmarks/bench_trt_nms.py [--frames 60] [--threads 1]

The model is the stand-in with YOLOP's I/O at 384x640 (15,120 candidates, a small conv stack so
inference is not free): "typical" scores (~1.3 % of candidates above 0.25) and "crowd" (every
candidate scores 0.5-1, the worst case for NMS). Batch 1, sequential stages (no overlap), 1280x720
frames. Writes benchmarks/results/trt_nms.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_runtime_overhead import road_frames  # noqa: E402

from runtime import load_artifact, run  # noqa: E402
from runtime.fileio import atomic_write_text  # noqa: E402
from runtime.spec import DEFAULT_INPUT_HW  # noqa: E402
from runtime.tensorrt.cli import main as trt_build_main  # noqa: E402
from runtime.tensorrt.device import installed_version  # noqa: E402
from runtime.tensorrt.nms import supported_nms  # noqa: E402
from runtime.testing import (  # noqa: E402
    StandinConfig,
    build_standin_onnx,
    standin_sidecar,
    yolop_count,
)

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "trt_nms.json"


def standin(folder: Path, nms_in_graph: bool, crowd: bool) -> Path:
    cfg = StandinConfig(
        input_hw=DEFAULT_INPUT_HW,
        num_candidates=yolop_count(DEFAULT_INPUT_HW),
        conv_channels=16,
        nms_in_graph=nms_in_graph,
        max_det=100,
    )
    name = f"standin_{'crowd' if crowd else 'typical'}{'_nms' if nms_in_graph else ''}.onnx"
    path = build_standin_onnx(folder / name, cfg)
    if crowd:
        _crowd_scores(path)
    standin_sidecar(path, cfg)
    return path


def _crowd_scores(path: Path) -> None:
    """Every candidate scores 0.5-1: rewrite the candidate constant's score column."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    for init in model.graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.ndim == 3 and arr.shape[-1] == 6:
            arr = arr.copy()
            arr[..., 4] = np.random.default_rng(0).uniform(0.5, 1.0, arr.shape[:-1])
            init.CopyFrom(numpy_helper.from_array(arr, init.name))
    onnx.save(model, str(path))


def measure(artifact: Path, frames: list[np.ndarray], args: Any) -> dict[str, Any]:
    with load_artifact(artifact, threads=args.threads) as be:
        res = run(be, frames, batch=1, overlap=False, warmup=args.warmup, progress=False)
        device = be.device
    rep = res.report
    stage = {k: rep.stages[k] for k in ("infer", "postprocess")}
    both = np.asarray([r["infer"] + r["postprocess"] for r in rep.timeline])
    kept = [len(r.scores) for r in res.results]
    return {
        "device": device,
        "frames": rep.frames_measured,
        "boxes_per_frame": float(np.mean(kept)),
        **{f"{k}_ms": {"p50": s.p50, "p99": s.p99, "mean": s.mean} for k, s in stage.items()},
        "infer_plus_post_ms": {
            "p50": float(np.median(both)),
            "p99": float(np.percentile(both, 99)),
        },
    }


def trt_engines(onnx: Path, kinds: list[str]) -> dict[str, Path | str]:
    """kind -> engine built with that NMS, or the reason it was not measured."""
    if installed_version() is None:
        return {k: "not measured: no TensorRT" for k in kinds}
    import tensorrt as trt

    have, where = supported_nms(trt)
    out: dict[str, Path | str] = {}
    for kind in kinds:
        if kind not in have:
            out[kind] = f"not measured: {where} has no {kind}"
            continue
        engine = onnx.with_name(f"{onnx.stem}_{kind}.engine")
        rc = trt_build_main([str(onnx), "--engine", str(engine), "--trt-nms", kind])
        out[kind] = engine if rc == 0 else f"not measured: the {kind} build failed (rc {rc})"
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    frames = road_frames(args.frames)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for crowd in (False, True):
            case = "crowd" if crowd else "typical"
            plain = standin(Path(tmp), False, crowd)
            cases: dict[str, Path | str] = {
                "numpy (ORT, NMS outside)": plain,
                "onnx NonMaxSuppression (ORT)": standin(Path(tmp), True, crowd),
            }
            engines = trt_engines(plain, ["efficient", "inms"])
            cases.update({f"TensorRT {k}": v for k, v in engines.items()})
            for name, art in cases.items():
                row: dict[str, Any] = {"case": case, "nms": name}
                if isinstance(art, str):
                    row["result"] = art
                    print(f"{case:<8} {name:<30} {art}")
                else:
                    row.update(measure(art, frames, args))
                    s = row["infer_plus_post_ms"]
                    print(
                        f"{case:<8} {name:<30} infer+post p50 {s['p50']:7.2f} p99 {s['p99']:7.2f} ms"
                        f" | infer p50 {row['infer_ms']['p50']:6.2f} | post p50 "
                        f"{row['postprocess_ms']['p50']:6.2f} p99 {row['postprocess_ms']['p99']:6.2f}"
                        f" | {row['boxes_per_frame']:.1f} boxes"
                    )
                rows.append(row)
    info = {"machine": platform.processor() or platform.machine(), "threads": args.threads}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps({"info": info, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
