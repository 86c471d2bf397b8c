"""`mtc-export`: a thin layer over `export.export_model` (and `export.tensorrt.lint.lint_onnx` for
`--lint-only`). Flags follow `yolo export` / `trtexec` spelling; each maps to one field of
`ExportConfig`. User mistakes print one `error: ...` line on stderr and exit 2."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from export.config import ENGINES, SEG_OUTPUT_CHOICES, ExportConfig
from runtime.cli_kernel import (
    CliInterrupted,
    Parser,
    check_input_path,
    check_output_dir,
    default_help,
    run_cli,
)
from runtime.errors import MtcError
from runtime.tensorrt.targets import DEFAULT_TARGET, TRT_NMS_CHOICES, target_names

S = argparse.SUPPRESS
BOOL = argparse.BooleanOptionalAction

# (flags, config field as "section.field[.subfield]", argparse options): every flag is one field
# of an ExportConfig section; the sections own the defaults (shown in --help).
FLAGS: list[tuple[tuple[str, ...], str, dict[str, Any]]] = [
    (("-o", "--output"), "output.dir", {"metavar": "OUTPUT", "help": "output folder"}),
    (
        ("--overwrite",),
        "output.overwrite",
        {
            "action": "store_true",
            "help": "replace an export of the same --name in -o (its old files are removed first)",
        },
    ),
    (
        ("--name",),
        "output.name",
        {"metavar": "NAME", "help": "artifact base name (default: checkpoint file stem)"},
    ),
    (
        ("--imgsz",),
        "input.imgsz",
        {
            "type": int,
            "nargs": 2,
            "metavar": ("H", "W"),
            "help": "input size, multiples of 32 (default: the checkpoint's)",
        },
    ),
    (("--batch",), "input.batch", {"type": int, "help": "optimal batch (profile opt)"}),
    (("--min-batch",), "input.min_batch", {"type": int, "help": "profile min batch"}),
    (("--max-batch",), "input.max_batch", {"type": int, "help": "profile max batch"}),
    (
        ("--input",),
        "input.dtype",
        {
            "choices": ("float32", "uint8"),
            "help": "graph input: float32 NCHW (normalised on the host) or uint8: letterboxed "
            "BGR NHWC frames, cast + normalised + transposed in the graph (ONNX only for now)",
        },
    ),
    (("--opset",), "onnx.opset", {"type": int}),
    (
        ("--nms-in-graph",),
        "onnx.nms_in_graph",
        {
            "action": "store_true",
            "help": "NonMaxSuppression inside the graph: det [B,max_det,6] + det_count",
        },
    ),
    (
        ("--conf",),
        "onnx.conf_thres",
        {"type": float, "metavar": "CONF", "help": "score threshold (NMS in graph)"},
    ),
    (("--iou",), "onnx.iou_thres", {"type": float, "metavar": "IOU", "help": "NMS IoU threshold"}),
    (("--max-det",), "onnx.max_det", {"type": int, "help": "detections kept per image"}),
    (("--seg-output",), "onnx.seg_output", {"choices": SEG_OUTPUT_CHOICES}),
    (("--simplifier",), "onnx.simplifier", {"choices": ("onnxslim", "onnxsim", "none")}),
    (
        ("--fp16-onnx",),
        "half.enabled",
        {
            "action": BOOL,
            "help": "also write an FP16 ONNX (FP32 I/O); needed for TensorRT 11 FP16",
        },
    ),
    (
        ("--fp16-keep-resize-fp32",),
        "half.keep_resize_fp32",
        {"action": "store_true", "help": "keep Resize nodes in FP32 in the FP16 ONNX"},
    ),
    (
        ("--fp16-min-mask-agreement",),
        "checks.fp16.min_mask_agreement_pct",
        {"type": float, "metavar": "PCT"},
    ),
    (("--fp16-min-iou",), "checks.fp16.min_mean_iou", {"type": float, "metavar": "IOU"}),
    (("--fp16-max-score-delta",), "checks.fp16.max_score_delta", {"type": float, "metavar": "D"}),
    (("--engine",), "tensorrt.engine", {"choices": ENGINES}),
    (("--workspace",), "tensorrt.workspace_mib", {"type": int, "metavar": "MIB"}),
    (
        ("--opt-level",),
        "tensorrt.opt_level",
        {"type": int, "help": "builder optimization level 0..5"},
    ),
    (
        ("--timing-cache",),
        "tensorrt.timing_cache_dir",
        {"metavar": "DIR", "help": "timing cache folder (default ~/.cache/mtc/tensorrt_timing)"},
    ),
    (
        ("--dla-core", "--dla"),
        "tensorrt.dla_core",
        {
            "type": int,
            "help": "build for this DLA core (Jetson Orin; one batch size; GPU fallback on; with "
            "--engine int8 from the calibration cache, TensorRT 10.x)",
        },
    ),
    (
        ("--trt-target",),
        "tensorrt.target",
        {
            "choices": "TARGETS",  # filled from runtime/tensorrt/targets.py when the parser is built
            "help": "TensorRT to lint for and write the build for (runtime/tensorrt/targets.py; "
            f"default: installed, else {DEFAULT_TARGET})",
        },
    ),
    (
        ("--trt-nms",),
        "tensorrt.nms",
        {
            "choices": TRT_NMS_CHOICES,
            "help": "append NMS to the TensorRT engine (det [B,max_det,6] + det_count, deploy "
            "thresholds): efficient = EfficientNMS_TRT plugin, inms = INMSLayer, auto = the "
            "target's (runtime/tensorrt/targets.py)",
        },
    ),
    (
        ("--dry-run",),
        "tensorrt.dry_run",
        {
            "action": "store_true",
            "help": "write ONNX, sidecars and the build commands; do not build an engine",
        },
    ),
    (
        ("--allow-lint-fail",),
        "tensorrt.allow_lint_fail",
        {
            "action": "store_true",
            "help": "with --engine none: keep an ONNX that fails the TensorRT lint",
        },
    ),
    (
        ("--int8",),
        "int8.enabled",
        {
            "action": "store_true",
            "help": "also write <name>_int8.onnx: Q/DQ INT8 calibrated on --calib-data, guarded "
            "per task against the FP32 export (docs/INT8.md)",
        },
    ),
    (
        ("--calib-data",),
        "int8.calib_data",
        {"metavar": "D", "help": "calibration: a data set root (its --calib-split) or a .npy"},
    ),
    (("--calib-split",), "int8.calib_split", {"metavar": "SPLIT"}),
    (("--calib-images",), "int8.calib_images", {"type": int, "metavar": "N"}),
    (("--calib-batch",), "int8.calib_batch", {"type": int, "metavar": "B"}),
    (
        ("--calibration",),
        "int8.calibration",
        {"choices": ("auto", "max", "percentile", "entropy", "mse")},
    ),
    (("--percentile",), "int8.percentile", {"type": float, "metavar": "P"}),
    (
        ("--guard",),
        "int8.guard",
        {"action": BOOL, "help": "score the INT8 ONNX per task and fall layers back to FP16"},
    ),
    (
        ("--guard-data",),
        "int8.guard_data",
        {"metavar": "D", "help": "data set the guard scores (default: --calib-data)"},
    ),
    (("--guard-split",), "int8.guard_split", {"metavar": "SPLIT"}),
    (
        ("--guard-images",),
        "int8.guard_images",
        {"type": int, "metavar": "N", "help": "score only the first N images (default: all)"},
    ),
    (
        ("--int8-budget-recall",),
        "int8.budgets.det_recall",
        {"type": float, "metavar": "PTS", "help": "most detection recall may drop (points)"},
    ),
    (("--int8-budget-map50",), "int8.budgets.det_map50", {"type": float, "metavar": "PTS"}),
    (("--int8-budget-drivable",), "int8.budgets.drivable_miou", {"type": float, "metavar": "PTS"}),
    (("--int8-budget-lane",), "int8.budgets.lane_iou", {"type": float, "metavar": "PTS"}),
    (
        ("--int8-exclude",),
        "int8.exclude",
        {"nargs": "+", "metavar": "LAYER", "help": "layers or layer groups kept out of INT8"},
    ),
    (("--seed",), "seed", {"type": int}),
    (("--no-progress",), "output.progress", {"action": "store_false"}),
]


def _field_default(dest: str) -> object:
    value: object = ExportConfig()
    for part in dest.split("."):
        value = getattr(value, part)
    return value


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="mtc-export",
        description="Export a checkpoint to verified ONNX, FP16 ONNX "
        "and a TensorRT engine, each with a sidecar the runtime reads.",
    )
    p.add_argument(
        "checkpoint", help="mtc checkpoint or official YOLOP .pth (an .onnx with --lint-only)"
    )
    for flags, dest, opts in FLAGS:
        if opts.get("choices") == "TARGETS":
            opts = {**opts, "choices": target_names()}
        plain = opts.get("action") is None and "choices" not in opts
        if "metavar" not in opts and plain:  # the user sees OPSET, not ONNX__OPSET
            opts = {**opts, "metavar": dest.rpartition(".")[2].upper()}
        if opts.get("action") not in ("store_true", "store_false"):
            opts = {**opts, "help": default_help(opts.get("help"), _field_default(dest))}
        p.add_argument(*flags, dest=dest.replace(".", "__"), default=S, **opts)
    p.add_argument(
        "--lint-only", action="store_true", help="only lint CHECKPOINT (an .onnx) for --trt-target"
    )
    return p


def config_from_args(a: argparse.Namespace) -> ExportConfig:
    """The flags that were given, each into its section field; the rest keep the defaults."""
    given: dict[str, Any] = {}
    for key, value in vars(a).items():
        if "__" in key or key == "seed":
            given[key.replace("__", ".")] = value
    for key in ("input.imgsz", "int8.exclude"):
        if key in given:
            given[key] = tuple(given[key])
    sections: dict[str, Any] = {}
    d = ExportConfig()
    for name in ("output", "input", "onnx", "half", "tensorrt", "checks", "int8"):
        mine = {k[len(name) + 1 :]: v for k, v in given.items() if k.startswith(name + ".")}
        inner = {k: v for k, v in mine.items() if "." not in k}
        for sub in {k.split(".")[0] for k in mine if "." in k}:  # checks.fp16.*
            leaf = {k.split(".", 1)[1]: v for k, v in mine.items() if k.startswith(sub + ".")}
            inner[sub] = replace(getattr(getattr(d, name), sub), **leaf)
        sections[name] = replace(getattr(d, name), **inner)
    return ExportConfig(**sections, seed=given.get("seed", d.seed))


def _given(a: argparse.Namespace, dest: str) -> Any:
    """A flag's value, or its config default when it was not given."""
    return getattr(a, dest.replace(".", "__"), _field_default(dest))


def _lint_only(a: argparse.Namespace) -> int:
    from export.staging import prepare_output_dir
    from export.tensorrt.lint import lint_onnx
    from runtime.fileio import atomic_write_text

    path = Path(a.checkpoint)
    if not path.is_file():
        raise MtcError(f"{path} does not exist (--lint-only takes an .onnx file)")
    try:
        rep = lint_onnx(path, _given(a, "tensorrt.target") or DEFAULT_TARGET)
    except Exception as e:  # onnx.load raises DecodeError etc. on a non-ONNX file
        raise MtcError(f"cannot read {path} as ONNX ({str(e)[:200]})") from None
    out = prepare_output_dir(Path(_given(a, "output.dir"))) / f"{path.stem}.lint.json"
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

    name = _given(a, "output.name") or Path(a.checkpoint).stem
    out = _given(a, "output.dir")
    done = existing_export_files(Path(out), name, with_lint=False)
    kept = f"kept {', '.join(p.name for p in done)} in {out}" if done else "nothing was kept"
    again = " plus --overwrite" if done else ""
    return f"{kept} (files are renamed into place only when complete); run the same command{again}"


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv, prog="mtc-export", sigterm=True)


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    check_output_dir(_given(args, "output.dir"), "-o")
    if args.lint_only:
        return _lint_only(args)
    check_input_path(args.checkpoint, "checkpoint", "a checkpoint (.pt/.pth)")
    cfg = config_from_args(args)  # sizes and options refused before torch is even imported
    for flag, value in (
        ("--calib-data", cfg.int8.calib_data),
        ("--guard-data", cfg.int8.guard_data),
    ):
        if cfg.int8.enabled and value:
            check_input_path(value, flag, "a data set root or a .npy of preprocessed images")
    from export.pipeline import export_model

    try:
        result = export_model(args.checkpoint, cfg)
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
