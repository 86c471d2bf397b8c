"""Command line of the engine build: `python -m runtime.tensorrt model.onnx ...`, and the device
build script `<name>_build_engine.py` (the same code, bundled, with the export's arguments first).
Reads the profile and the NMS settings from the ONNX's sidecar unless flags say otherwise,
builds, writes the engine and its sidecar."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from runtime.fileio import atomic_write_bytes
from runtime.tensorrt.builder import Shapes, build_serialized_engine
from runtime.tensorrt.device import (
    default_timing_cache_dir,
    import_tensorrt,
    query_gpu_name,
    timing_cache_file,
)
from runtime.tensorrt.engine_sidecar import (
    batch_range,
    int8_sidecar_for,
    read_sidecar_json,
    write_engine_sidecar,
)
from runtime.tensorrt.errors import EngineBuildError, TensorRTUnavailableError
from runtime.tensorrt.nms import NmsSpec, nms_spec_from_sidecar, resolve_nms_kind
from runtime.tensorrt.targets import FP16_PATHS, NMS_NONE, PRECISIONS, TRT_NMS_CHOICES

PROG = "python -m runtime.tensorrt"


def parse_shapes(text: str) -> dict[str, tuple[int, ...]]:
    """trtexec spelling: `images:1x3x384x640[,other:...]`."""
    out: dict[str, tuple[int, ...]] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, dims = part.rpartition(":")
        try:
            shape = tuple(int(d) for d in dims.split("x"))
        except ValueError:
            shape = ()
        if not sep or not name or not shape:
            raise EngineBuildError(f"shape {part!r} is not NAME:AxBxC (e.g. images:1x3x384x640)")
        out[name] = shape
    return out


def _parser(prog: str | None = PROG) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,  # None (the device build script): its file name
        description="Build a TensorRT engine (+ sidecar for mtc-run) from an mtc ONNX export.",
    )
    p.add_argument("onnx", type=Path, help="the .onnx (its .onnx.json sidecar beside it)")
    p.add_argument(
        "--engine", type=Path, help="output (default: beside the ONNX, <stem>_<precision>.engine)"
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp16",
        help="int8: from the Q/DQ ONNX (x_int8.onnx); with --dla-core from x.onnx + --calib",
    )
    p.add_argument(
        "--calib",
        type=Path,
        help="calibration cache for --precision int8 --dla-core (default: the one the INT8 "
        "ONNX's sidecar names, beside the ONNX)",
    )
    p.add_argument("--fp16-path", choices=("auto", *FP16_PATHS), default="auto")
    for k in ("min", "opt", "max"):
        p.add_argument(f"--{k}-shapes", help=f"{k} profile shapes, NAME:AxBxC (default: sidecar)")
    p.add_argument("--workspace", type=int, default=4096, help="workspace pool, MiB")
    p.add_argument("--opt-level", type=int, default=3, help="builder optimisation level 0-5")
    p.add_argument("--cache-dir", type=Path, help="timing cache folder ($MTC_TIMING_CACHE wins)")
    p.add_argument(
        "--dla-core",
        "--dla",
        dest="dla_core",
        type=int,
        help="build for this DLA core (Jetson Orin; GPU fallback on; static shapes only)",
    )
    p.add_argument(
        "--trt-nms",
        choices=TRT_NMS_CHOICES,
        default=NMS_NONE,
        help="append NMS to the engine (det [B,K,6] + det_count): efficient = EfficientNMS_TRT, "
        "inms = INMSLayer, auto = what this TensorRT target supports (default: none)",
    )
    p.add_argument(
        "--nms-conf", type=float, help="score threshold baked in (default: sidecar deploy)"
    )
    p.add_argument("--nms-iou", type=float, help="IoU threshold baked in (default: sidecar deploy)")
    p.add_argument("--nms-max-det", type=int, help="K, boxes kept per image (default: deploy)")
    p.add_argument("--nms-topk", type=int, help="candidates per image into NMS (default: deploy)")
    p.add_argument("--no-sidecar", action="store_true", help="build the engine only")
    return p


def _profile_from_args(args: argparse.Namespace, onnx_path: Path) -> Shapes:
    given = [args.min_shapes, args.opt_shapes, args.max_shapes]
    if all(given):
        mins, opts, maxs = (parse_shapes(s) for s in given)
        if not set(mins) == set(opts) == set(maxs):
            raise EngineBuildError("--min-shapes, --opt-shapes and --max-shapes name other inputs")
        return {n: (mins[n], opts[n], maxs[n]) for n in mins}
    if any(given):
        raise EngineBuildError("give all of --min-shapes, --opt-shapes, --max-shapes, or none")
    side = onnx_path.with_name(onnx_path.name + ".json")
    if not side.is_file():
        raise EngineBuildError(f"no sidecar {side} to read the input shape from; pass --*-shapes")
    data = json.loads(side.read_text(encoding="utf-8"))
    inp, b = data["input"], data["batch"]
    dims = tuple(int(d) for d in inp["shape"][1:])
    lo, opt, hi = ((int(b[k]), *dims) for k in ("min", "opt", "max"))
    return {inp["name"]: (lo, opt, hi)}


def build_from_args(argv: list[str], base: Path, prog: str | None = PROG) -> list[Path]:
    """Build as the command line asks; relative paths are relative to `base`. Returns the files
    written (engine, then sidecar)."""
    args = _parser(prog).parse_args(argv)
    onnx_path = base / args.onnx
    if not onnx_path.is_file():
        raise EngineBuildError(f"ONNX {onnx_path} does not exist; pass the .onnx mtc-export wrote")
    stem = onnx_path.stem.removesuffix(f"_{args.precision}")  # student_fp16.onnx -> student_fp16
    default = onnx_path.with_name(f"{stem}_{args.precision}.engine")
    engine = base / args.engine if args.engine else default
    shapes = _profile_from_args(args, onnx_path)
    onnx_sidecar = onnx_path.with_name(onnx_path.name + ".json")
    if not args.no_sidecar and not onnx_sidecar.is_file():  # fail before the minutes of building
        raise EngineBuildError(
            f"no sidecar {onnx_sidecar}: the engine's sidecar (what mtc-run needs) is made from "
            "it; copy the whole export folder, or pass --no-sidecar to build the engine alone"
        )
    int8_side, calib = _int8_from_args(args, onnx_path, base)
    trt = import_tensorrt()
    nms = _nms_from_args(trt, args, onnx_sidecar)
    gpu = query_gpu_name()
    cache_dir = os.environ.get("MTC_TIMING_CACHE") or args.cache_dir or default_timing_cache_dir()
    cache = timing_cache_file(base / cache_dir, gpu, str(trt.__version__))
    plan, info = build_serialized_engine(
        onnx_path.read_bytes(),
        precision=args.precision,
        input_shapes=shapes,
        workspace_mib=args.workspace,
        opt_level=args.opt_level,
        timing_cache=cache,
        trt=trt,
        fp16_path=None if args.fp16_path == "auto" else args.fp16_path,
        dla_core=args.dla_core,
        gpu=gpu,
        nms=nms,
        calib_cache=calib,
    )
    written = [atomic_write_bytes(engine, plan)]
    if not args.no_sidecar:
        batch = batch_range(shapes)
        side = write_engine_sidecar(
            engine,
            onnx_path,
            precision=args.precision,
            info=info,
            batch=batch,
            int8_sidecar=int8_side,
        )
        written.append(side)
    return written


def _int8_from_args(
    args: argparse.Namespace, onnx_path: Path, base: Path
) -> tuple[Path | None, bytes | None]:
    """(sidecar with the `int8` block, calibration cache bytes for DLA), checked before the
    build. The cache is the one `--calib` names, else the one the INT8 ONNX's sidecar names."""
    if args.precision != "int8":
        if args.calib is not None:
            raise EngineBuildError("--calib is for --precision int8 --dla-core only")
        return None, None
    side = int8_sidecar_for(onnx_path)
    if not args.no_sidecar and not side.is_file():
        raise EngineBuildError(
            f"no sidecar {side}: an INT8 engine's sidecar carries its 'int8' block; copy the "
            "whole export folder (made with mtc-export --int8), or pass --no-sidecar"
        )
    if args.dla_core is None:
        if args.calib is not None:
            raise EngineBuildError(
                "--calib is for the DLA build (implicit INT8); the Q/DQ ONNX carries its scales"
            )
        return side, None
    calib = base / args.calib if args.calib is not None else None
    if calib is None and side.is_file():
        name = (read_sidecar_json(side, None).get("int8") or {}).get("calib_cache")
        calib = onnx_path.with_name(name) if name else None
    if calib is None or not calib.is_file():
        what = f"{calib} does not exist" if calib else f"{side} names none"
        raise EngineBuildError(
            f"--precision int8 --dla-core needs the calibration cache ({what}); pass --calib "
            "<name>_int8.calib (mtc-export --int8 writes it beside the ONNX)"
        )
    return side, calib.read_bytes()


def _nms_from_args(trt: Any, args: argparse.Namespace, onnx_sidecar: Path) -> NmsSpec | None:
    kind = resolve_nms_kind(trt, args.trt_nms)
    if kind is None:
        return None
    if not onnx_sidecar.is_file():
        raise EngineBuildError(f"--trt-nms reads the classes and thresholds from {onnx_sidecar}")
    side = json.loads(onnx_sidecar.read_text(encoding="utf-8"))
    overrides = {
        "conf_thres": args.nms_conf,
        "iou_thres": args.nms_iou,
        "max_det": args.nms_max_det,
        "topk": args.nms_topk,
    }
    return nms_spec_from_sidecar(side, kind, overrides)


def main(
    argv: list[str] | None = None, *, shipped_args: Sequence[str] = (), base: Path | None = None
) -> int:
    """`shipped_args`: the export's arguments, from the device build script (bundle.py), which
    come first (the command line's override them); paths are then relative to `base`, the
    script's folder, and --help names the script."""
    args = [*shipped_args, *(sys.argv[1:] if argv is None else argv)]
    try:
        written = build_from_args(args, base or Path.cwd(), None if shipped_args else PROG)
    except (TensorRTUnavailableError, EngineBuildError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("wrote " + " and ".join(str(p) for p in written))
    return 0
