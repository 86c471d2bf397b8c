"""`mtc-export`: a thin layer over `export.export_model` (and `export.tensorrt.lint.lint_onnx` for
`--lint-only`). Flags follow `yolo export` / `trtexec` spelling; each maps to one field of
`ExportConfig`. User mistakes print one `error: ...` line on stderr and exit 2."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from runtime.cli_kernel import (
    CliInterrupted,
    Parser,
    check_input_path,
    check_output_dir,
    run_cli,
)
from runtime.errors import MtcError
from runtime.trt_targets import DEFAULT_TARGET, target_names


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="mtc-export",
        description="Export a checkpoint to verified ONNX, FP16 ONNX "
        "and a TensorRT engine, each with a sidecar the runtime reads.",
    )
    p.add_argument(
        "checkpoint", help="mtc checkpoint or official YOLOP .pth (an .onnx with --lint-only)"
    )
    p.add_argument("-o", "--output", default="export_out", help="output folder")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an export of the same --name in -o (its old files are removed first)",
    )
    p.add_argument("--name", help="artifact base name (default: checkpoint file stem)")
    p.add_argument(
        "--imgsz",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="input size, multiples of 32 (default: the checkpoint's)",
    )
    _graph_flags(p)
    _fp16_flags(p)
    _engine_flags(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    return p


def _graph_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch", type=int, default=1, help="optimal batch (profile opt)")
    p.add_argument("--min-batch", type=int, default=1, help="profile min batch")
    p.add_argument("--max-batch", type=int, default=8, help="profile max batch")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument(
        "--nms-in-graph",
        action="store_true",
        help="NonMaxSuppression inside the graph: det [B,max_det,6] + det_count",
    )
    p.add_argument("--conf", type=float, default=None, help="score threshold (NMS in graph)")
    p.add_argument("--iou", type=float, default=None, help="NMS IoU threshold")
    p.add_argument("--max-det", type=int, default=None, help="detections kept per image")
    p.add_argument("--seg-output", choices=("argmax", "logits"), default="argmax")
    p.add_argument("--simplifier", choices=("onnxslim", "onnxsim", "none"), default="onnxslim")


def _fp16_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--fp16-onnx",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also write an FP16 ONNX (FP32 I/O); needed for TensorRT 11 FP16",
    )
    p.add_argument(
        "--fp16-keep-resize-fp32",
        action="store_true",
        help="keep Resize nodes in FP32 in the FP16 ONNX",
    )
    p.add_argument("--fp16-min-mask-agreement", type=float, default=None, metavar="PCT")
    p.add_argument("--fp16-min-iou", type=float, default=None, metavar="IOU")
    p.add_argument("--fp16-max-score-delta", type=float, default=None, metavar="D")


def _engine_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", choices=("fp16", "fp32", "none"), default="fp16")
    p.add_argument("--workspace", type=int, default=4096, metavar="MIB")
    p.add_argument("--opt-level", type=int, default=3, help="builder optimization level 0..5")
    p.add_argument(
        "--timing-cache",
        metavar="DIR",
        help="timing cache folder (default ~/.cache/mtc/tensorrt_timing)",
    )
    p.add_argument("--dla-core", type=int, default=None, help="build for this DLA core (Jetson)")
    p.add_argument(
        "--trt-target",
        choices=target_names(),
        default=None,
        help="TensorRT to lint for and write the build for (runtime/trt_targets.py; default: "
        f"installed, else {DEFAULT_TARGET})",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="write ONNX, sidecars and the build commands; do not build an engine",
    )
    p.add_argument(
        "--allow-lint-fail",
        action="store_true",
        help="with --engine none: keep an ONNX that fails the TensorRT lint",
    )
    p.add_argument(
        "--lint-only", action="store_true", help="only lint CHECKPOINT (an .onnx) for --trt-target"
    )


def config_from_args(a: argparse.Namespace):  # -> ExportConfig
    from export.config import ExportConfig, Fp16Thresholds

    d = ExportConfig()
    fp16 = Fp16Thresholds(
        a.fp16_min_mask_agreement
        if a.fp16_min_mask_agreement is not None
        else d.fp16.min_mask_agreement_pct,
        a.fp16_min_iou if a.fp16_min_iou is not None else d.fp16.min_mean_iou,
        a.fp16_max_score_delta if a.fp16_max_score_delta is not None else d.fp16.max_score_delta,
    )
    return ExportConfig(
        output_dir=a.output,
        name=a.name,
        overwrite=a.overwrite,
        imgsz=tuple(a.imgsz) if a.imgsz else None,
        batch=a.batch,
        min_batch=a.min_batch,
        max_batch=a.max_batch,
        opset=a.opset,
        nms_in_graph=a.nms_in_graph,
        seg_output=a.seg_output,
        conf_thres=d.conf_thres if a.conf is None else a.conf,
        iou_thres=d.iou_thres if a.iou is None else a.iou,
        max_det=d.max_det if a.max_det is None else a.max_det,
        simplifier=a.simplifier,
        fp16_onnx=a.fp16_onnx,
        fp16_keep_resize_fp32=a.fp16_keep_resize_fp32,
        engine=a.engine,
        workspace_mib=a.workspace,
        opt_level=a.opt_level,
        timing_cache_dir=a.timing_cache,
        dla_core=a.dla_core,
        trt_target=a.trt_target,
        dry_run=a.dry_run,
        allow_lint_fail=a.allow_lint_fail,
        seed=a.seed,
        progress=not a.no_progress,
        fp16=fp16,
    )


def _lint_only(a: argparse.Namespace) -> int:
    from export.staging import prepare_output_dir
    from export.tensorrt.lint import lint_onnx
    from runtime.fileio import atomic_write_text

    path = Path(a.checkpoint)
    if not path.is_file():
        raise MtcError(f"{path} does not exist (--lint-only takes an .onnx file)")
    try:
        rep = lint_onnx(path, a.trt_target or DEFAULT_TARGET)
    except Exception as e:  # onnx.load raises DecodeError etc. on a non-ONNX file
        raise MtcError(f"cannot read {path} as ONNX ({str(e)[:200]})") from None
    out = prepare_output_dir(Path(a.output)) / f"{path.stem}.lint.json"
    atomic_write_text(out, json.dumps(rep.to_dict(), indent=2) + "\n")
    print(rep.format_text())
    print(f"report: {out}")
    return 0 if rep.ok else 2


def _print_result(result) -> None:
    from export.summary import format_table

    print(format_table(result.summary))
    eng = result.summary.get("engine", {})
    if eng.get("trtexec"):
        print(f"trtexec (TensorRT {eng['target']}): {eng['trtexec_script']}")
        print(f"python build script: {eng['build_script']}")
    if result.summary_path:
        print(f"summary: {result.summary_path}")


def _interrupted_text(a: argparse.Namespace) -> str:
    from export.outputs import existing_export_files

    name = a.name or Path(a.checkpoint).stem
    done = existing_export_files(Path(a.output), name, with_lint=False)
    kept = f"kept {', '.join(p.name for p in done)} in {a.output}" if done else "nothing was kept"
    again = " plus --overwrite" if done else ""
    return f"{kept} (files are renamed into place only when complete); run the same command{again}"


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv, prog="mtc-export")


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    check_output_dir(args.output, "-o")
    if args.lint_only:
        return _lint_only(args)
    check_input_path(args.checkpoint, "checkpoint", "a checkpoint (.pt/.pth)")
    from export.pipeline import export_model

    try:
        result = export_model(args.checkpoint, config_from_args(args))
    except MtcError as e:
        partial = getattr(e, "result", None)
        if partial is not None and partial.summary:
            _print_result(partial)
        raise
    except KeyboardInterrupt:
        raise CliInterrupted(_interrupted_text(args)) from None
    _print_result(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
