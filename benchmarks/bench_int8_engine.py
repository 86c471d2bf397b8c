"""INT8 vs FP16 TensorRT engines of one model, built and timed in one run (`make gpu-check`
runs it): the INT8 engine's agreement with the INT8 ONNX in ONNX Runtime (the export's own
check, same thresholds) and the per-frame time of both engines at each batch, with the ratio.

    python benchmarks/bench_int8_engine.py [--onnx demo_out/export/student.onnx] [--batches 1 4 8]

The INT8 ONNX is `<stem>_int8.onnx` beside the ONNX (mtc-export --int8). Where there is none, one
is made here with ONNX Runtime's quantize_static in the same layout (runtime.testing.
quantize_like_int8, on structured probe images) and the JSON says so. Both engines are built by
the one builder (runtime.tensorrt), batch 1..max(--batches). Times are the median of
`--iters` calls of the backend alone after `--warmup`, on a real GPU only: without TensorRT it
prints one line and exits 2, writing nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

EXIT_UNAVAILABLE = 2


def _median_ms(fn: Any, warmup: int, iters: int) -> float:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def deploy_spec(sidecar: Any) -> Any:
    """What the FP16/INT8 agreement needs to know of the graph's outputs, from its sidecar."""
    from export.onnx.deploy import DeploySpec

    det, seg = sidecar.det, sidecar.seg
    return DeploySpec(
        nms_in_graph=bool(det and det.nms_in_graph),
        seg_argmax=seg is None or seg.output == "argmax",
        det_decoder=det.decoder if det else None,
        det_raw=bool(det and not det.decoded_in_graph),
        seg_tasks=tuple(o.name for o in sidecar.outputs if o.name not in ("det", "det_count")),
        input_hw=tuple(sidecar.preprocess.input_hw),
        decoder_params=det.decoder_params() if det else {},
    )


def int8_onnx_for(onnx_path: Path, work: Path, hw: tuple[int, int]) -> tuple[Path, str]:
    """(the INT8 ONNX in `work`, where it came from)."""
    from export.checks.inputs import structured_input
    from runtime.fileio import file_sha256
    from runtime.sidecar import Int8Info, read_sidecar, sidecar_path
    from runtime.testing import quantize_like_int8

    given = onnx_path.with_name(f"{onnx_path.stem}_int8.onnx")
    if given.is_file() and sidecar_path(given).is_file():
        for p in (given, sidecar_path(given)):
            shutil.copy(p, work / p.name)
        return work / given.name, f"mtc-export --int8 ({given})"
    out, _ = quantize_like_int8(
        work / onnx_path.name,
        [structured_input(1, hw) for _ in range(8)],
        work / given.name,
    )
    side = read_sidecar(work / onnx_path.name, verify_hash=False)
    info = Int8Info(calibration="max", calib_images=8)
    side = dataclasses.replace(
        side, artifact=out.name, sha256=file_sha256(out), precision="int8", int8=info
    )
    side.write(sidecar_path(out))
    return out, "onnxruntime quantize_static, here (no <stem>_int8.onnx beside the ONNX)"


def build(onnx_path: Path, precision: str, engine: Path, hw: tuple[int, int], bmax: int) -> None:
    from runtime.tensorrt.cli import main as trt_build_main

    shapes = [
        f"--{k}-shapes=images:{b}x3x{hw[0]}x{hw[1]}"
        for k, b in zip(("min", "opt", "max"), (1, 1, bmax))
    ]
    rc = trt_build_main(
        [str(onnx_path), "--precision", precision, "--engine", str(engine), *shapes]
    )
    if rc != 0:
        raise SystemExit(f"bench_int8_engine: the {precision} build failed (exit {rc})")


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from export.checks.inputs import structured_input
    from export.config import Fp16Thresholds
    from export.tensorrt.int8 import int8_engine_agreement
    from runtime import load_artifact
    from runtime.sidecar import read_sidecar, sidecar_path

    src = Path(args.onnx)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench_int8_"))
    work.mkdir(parents=True, exist_ok=True)
    for p in (src, sidecar_path(src)):
        shutil.copy(p, work / p.name)
    sc = read_sidecar(work / src.name)
    hw = tuple(sc.preprocess.input_hw)
    int8_onnx, origin = int8_onnx_for(src, work, hw)
    bmax = max(args.batches)
    engines = {"fp16": work / "m_fp16.engine", "int8": work / "m_int8.engine"}
    build(work / src.name, "fp16", engines["fp16"], hw, bmax)
    build(int8_onnx, "int8", engines["int8"], hw, bmax)
    cases = [(f"structured b{b}", structured_input(b, hw)) for b in (1, bmax)]
    rows = []
    with load_artifact(engines["fp16"]) as fp16, load_artifact(engines["int8"]) as int8:
        rep = int8_engine_agreement(int8.infer, int8_onnx, cases, deploy_spec(sc), Fp16Thresholds())
        for b in args.batches:
            x = np.random.default_rng(0).standard_normal((b, 3, *hw)).astype(np.float32)
            t16 = _median_ms(lambda x=x: fp16.infer(x), args.warmup, args.iters) / b
            t8 = _median_ms(lambda x=x: int8.infer(x), args.warmup, args.iters) / b
            rows.append(
                {"batch": b, "fp16_ms_per_frame": t16, "int8_ms_per_frame": t8, "speedup": t16 / t8}
            )
    side = read_sidecar(engines["int8"])
    return {
        "onnx": str(src),
        "int8_onnx": origin,
        "tensorrt": side.tensorrt.version,
        "gpu": side.tensorrt.gpu,
        "int8_path": side.tensorrt.int8_path,
        "agreement_vs_int8_onnx": rep.to_dict(),
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--onnx", default="demo_out/export/student.onnx")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--work", help="folder for the engines (default: a new temporary one)")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "int8_engine.json"))
    args = ap.parse_args(argv)
    from runtime.tensorrt.device import installed_version

    if installed_version() is None:
        print(
            "bench_int8_engine: TensorRT is not installed here; run it on a GPU machine",
            file=sys.stderr,
        )
        return EXIT_UNAVAILABLE
    if not Path(args.onnx).is_file():
        print(
            f"bench_int8_engine: no ONNX {args.onnx}; pass --onnx (an mtc export)", file=sys.stderr
        )
        return EXIT_UNAVAILABLE
    result = measure(args)
    from runtime.fileio import atomic_write_text

    atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
    for r in result["rows"]:
        print(
            f"batch {r['batch']}: FP16 {r['fp16_ms_per_frame']:.3f} ms/frame, INT8 "
            f"{r['int8_ms_per_frame']:.3f} ms/frame ({r['speedup']:.2f}x)"
        )
    print(
        f"INT8 engine vs INT8 ONNX: {'ok' if result['agreement_vs_int8_onnx']['ok'] else 'FAILED'}"
    )
    print(f"wrote {args.json}")
    return 0 if result["agreement_vs_int8_onnx"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
