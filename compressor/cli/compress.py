"""`mtc-compress`: task-aware safe pruning + head-agnostic feature distillation of a teacher
checkpoint; writes the student checkpoint and a teacher-vs-student report. Every flag is a
CompressConfig / PruneConfig / DistillConfig field; --help shows those dataclasses' defaults.

    mtc-compress --teacher out/teacher/best.pt --data data/synth --ratio 0.4 \\
        --importance tci_gcp --kd --epochs 10 --calib-batches 8 --imgsz 192 320 -o out/compress
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

from compressor.cli.common import CliInterrupted, Parser, parse_pair, run_cli
from compressor.cli.label_flags import LABEL_FLAGS
from compressor.compress import CompressConfig, compress
from compressor.distill import FEATURE_LOSSES, DistillConfig
from compressor.distill.config import ADAPTER_INITS
from compressor.latency.config import BACKENDS as LATENCY_BACKENDS
from compressor.latency.config import PRECISIONS, LatencyConfig
from compressor.pruning import PruneConfig
from compressor.pruning.config import (
    AGGREGATES,
    CONFLICT_MODES,
    NORMALIZERS,
    RESCALES,
    ROUND_TO_AUTO,
    TARGETS,
)
from compressor.pruning.importance import list_importances
from runtime.cli_kernel import check_input_path, check_output_dir, default_help
from runtime.errors import MtcError

S = argparse.SUPPRESS


def round_to_arg(text: str) -> int | str:
    """--round-to: a positive integer or 'auto'."""
    if text == ROUND_TO_AUTO:
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {text!r}")
    return value


BOOL = argparse.BooleanOptionalAction

# (flag, config field, argparse options); prune.* / distill.* go to the nested configs.
FLAGS: list[tuple[str, str, dict]] = [
    ("--teacher", "teacher", {"required": True, "help": "teacher checkpoint (.pt)"}),
    ("--data", "data", {"required": True, "help": "data set root (YOLOP or BDD100K layout)"}),
    ("-o", "out", {"help": "output folder (student.pt, report.json/md, widths.png)"}),
    ("--imgsz", "imgsz", {"nargs": 2, "type": int, "metavar": ("H", "W")}),
    (
        "--ratio",
        "prune.ratio",
        {"type": float, "help": "fraction of the target (params, FLOPs or latency) to remove"},
    ),
    (
        "--target",
        "prune.target",
        {"choices": TARGETS, "help": "what --ratio removes; latency = measured on the backend"},
    ),
    (
        "--latency-table",
        "prune.latency_table",
        {"metavar": "FILE", "help": "table from mtc-latency (default: measure one here, cached)"},
    ),
    ("--latency-backend", "latency.backend", {"choices": LATENCY_BACKENDS}),
    ("--latency-precision", "latency.precision", {"choices": PRECISIONS}),
    (
        "--latency-device",
        "latency.device",
        {"help": "device the table must come from (text contained in its device name)"},
    ),
    (
        "--latency-threads",
        "latency.threads",
        {"type": int, "help": "ONNX Runtime threads (1: CPU clock, stable under load; 0: ORT's)"},
    ),
    ("--latency-batch", "latency.batch", {"type": int}),
    (
        "--latency-rounds",
        "prune.latency_rounds",
        {"type": int, "help": "plans built and measured to calibrate the latency model"},
    ),
    (
        "--measure-latency",
        "latency.measure",
        {"action": BOOL, "help": "time teacher and student side by side at the end"},
    ),
    (
        "--depth",
        "prune.depth",
        {
            "action": BOOL,
            "help": "also remove whole residual blocks the model spec declares (latency target)",
        },
    ),
    ("--importance", "prune.importance", {"help": "IMPORTANCES"}),  # filled from the registry
    ("--calib-batches", "prune.calib_batches", {"type": int}),
    ("--calib-batch", "calib_batch", {"type": int, "help": "images per calibration batch"}),
    ("--normalize", "prune.normalize", {"choices": NORMALIZERS}),
    ("--aggregate", "prune.aggregate", {"choices": AGGREGATES}),
    (
        "--task-weight",
        "prune.task_weights",
        {"action": "append", "metavar": "TASK=W", "help": "for --aggregate weighted (repeat)"},
    ),
    ("--conflict-lambda", "prune.conflict_lambda", {"type": float}),
    ("--conflict-mode", "prune.conflict_mode", {"choices": CONFLICT_MODES}),
    ("--group-rescale", "prune.group_rescale", {"choices": RESCALES}),
    ("--safe-top-q", "prune.safe_top_q", {"type": float}),
    (
        "--round-to",
        "prune.round_to",
        {
            "type": round_to_arg,
            "metavar": "N|auto",
            "help": "width step of the plan (default: the latency table's channel block, e.g. "
            "16 on AVX-512 ONNX Runtime, else its grid step, else 8; 'auto': the block, an "
            "error if the table records none)",
        },
    ),
    ("--min-width", "prune.min_width", {"type": int}),
    (
        "--max-group-ratio",
        "prune.max_group_ratio",
        {"type": float, "help": "most of any one channel group a plan may remove (1 = no cap)"},
    ),
    (
        "--protect",
        "prune.protected",
        {
            "action": "append",
            "metavar": "MODULE",
            "help": "never prune this module's outputs (repeat)",
        },
    ),
    ("--protect-outputs", "prune.protect_outputs", {"action": BOOL}),
    ("--iterative-steps", "prune.iterative_steps", {"type": int}),
    ("--step-epochs", "step_epochs", {"type": int, "help": "fine-tune epochs between steps"}),
    ("--flops-imgsz", "prune.flops_input_hw", {"nargs": 2, "type": int, "metavar": ("H", "W")}),
    ("--kd", "kd", {"action": BOOL, "help": "distil (default) or plain fine-tune"}),
    (
        "--taps",
        "distill.taps",
        {"nargs": "+", "help": "feature_info tap names; 'all' = every tap (default: the model's)"},
    ),
    ("--kd-loss", "distill.loss", {"choices": FEATURE_LOSSES}),
    ("--kd-weight", "distill.kd_weight", {"type": float}),
    ("--kd-normalize", "distill.normalize", {"action": BOOL}),
    ("--adapter-bn", "distill.adapter_bn", {"action": BOOL}),
    ("--adapter-init", "distill.adapter_init", {"choices": ADAPTER_INITS}),
    ("--epochs", "epochs", {"type": int, "help": "student training epochs (0 = prune only)"}),
    ("--batch", "batch", {"type": int}),
    ("--lr", "lr", {"type": float}),
    ("--optimizer", "optimizer", {"choices": ("adamw", "sgd")}),
    ("--max-train-images", "max_train_images", {"type": int}),
    ("--max-val-images", "max_val_images", {"type": int}),
    ("--det-mode", "det_mode", {"choices": ("yolop", "coco", "both")}),
    ("--seg-mode", "seg_mode", {"choices": ("global", "per_batch")}),
    ("--val-lane-labels", "val_lane_labels", {"choices": ("thin", "wide")}),
    ("--workers", "workers", {"type": int}),
    *LABEL_FLAGS,
    ("--device", "device", {"help": "auto, cpu, cuda, cuda:N"}),
    (
        "--cpu-bf16",
        "cpu_bf16",
        {"action": BOOL, "help": "bfloat16 autocast when training on CPU (AVX512-BF16 / AMX)"},
    ),
    ("--seed", "seed", {"type": int}),
    ("--overwrite", "overwrite", {"action": "store_true", "help": "start over in a used -o"}),
    (
        "--resume",
        "resume",
        {"action": "store_true", "help": "continue the killed run in -o from its train/last.pt"},
    ),
    ("--progress", "progress", {"action": BOOL}),
]


def _field_default(dest: str) -> object:
    head, _, leaf = dest.partition(".")
    if leaf:
        nested = {"prune": PruneConfig, "distill": DistillConfig, "latency": LatencyConfig}[head]()
        return getattr(nested, leaf)
    f = CompressConfig.__dataclass_fields__[dest]
    return None if f.default is dataclasses.MISSING else f.default


def _importance_help() -> str:
    """The registered importances, read when the parser is built (a criterion registered with
    register_importance before that is listed and accepted; PruneConfig validates the name)."""
    return " | ".join(list_importances())


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="mtc-compress", description=__doc__.split("\n\n")[0])
    for flag, dest, opts in FLAGS:
        if flag == "--importance":
            opts = {**opts, "help": _importance_help()}
        names = [flag, "--out"] if flag == "-o" else [flag]
        plain = opts.get("action") not in ("store_true", BOOL) and "choices" not in opts
        if "metavar" not in opts and plain:
            # the user sees RATIO, not the internal PRUNE__RATIO
            opts = {**opts, "metavar": dest.rpartition(".")[2].upper()}
        opts = {**opts, "help": default_help(opts.get("help"), _field_default(dest))}
        p.add_argument(*names, dest=dest.replace(".", "__"), default=S, **opts)
    return p


def _task_weights(items: list[str]) -> tuple[tuple[str, float], ...]:
    pairs = []
    for item in items:
        task, sep, value = item.partition("=")
        try:
            pairs.append((task, float(value)))
        except ValueError:
            sep = ""
        if not sep or not task:
            raise MtcError(f"--task-weight got {item!r}; expected TASK=WEIGHT, e.g. det=2.0")
    return tuple(pairs)


def config_from_args(args: argparse.Namespace) -> CompressConfig:
    given = {k.replace("__", "."): v for k, v in vars(args).items()}
    nested: dict[str, dict] = {"prune": {}, "distill": {}, "latency": {}}
    top = {}
    for key, value in given.items():
        head, _, leaf = key.partition(".")
        if leaf:
            nested[head][leaf] = value
        else:
            top[key] = value
    p = nested["prune"]
    if "task_weights" in p:
        p["task_weights"] = _task_weights(p["task_weights"])
    if "flops_input_hw" in p:
        p["flops_input_hw"] = parse_pair(p["flops_input_hw"], "--flops-imgsz")
    if "imgsz" in top:
        top["imgsz"] = parse_pair(top["imgsz"], "--imgsz")
    return CompressConfig(
        prune=PruneConfig(**p),
        distill=DistillConfig(**nested["distill"]),
        latency=LatencyConfig(**nested["latency"]),
        **top,
    )


def interrupted_text(out: str) -> str:
    last = Path(out) / "train" / "last.pt"
    if last.is_file():
        return f"kept {last}; continue with the same command plus --resume"
    return (
        f"no training state was saved yet in {out} (nothing of this run was kept); run the same "
        "command again to start over"
    )


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv, prog="mtc-compress")


def _main(argv: Sequence[str] | None) -> int:
    cfg = config_from_args(build_parser().parse_args(argv))
    check_input_path(cfg.teacher, "--teacher", "a teacher checkpoint (.pt)")
    check_input_path(cfg.data, "--data", "a data set root")
    check_output_dir(cfg.out, "-o")
    try:
        result = compress(cfg)
    except KeyboardInterrupt:
        raise CliInterrupted(interrupted_text(cfg.out)) from None
    r = result.report
    if not r:  # a non-zero rank under torchrun: rank 0 reports
        return 0
    print(
        f"params {r['teacher']['params']:,} -> {r['student']['params']:,} "
        f"({-r['params_reduction']:+.1%}), GFLOPs {r['teacher']['flops'] / 1e9:.3f} -> "
        f"{r['student']['flops'] / 1e9:.3f} ({-r['flops_reduction']:+.1%})"
    )
    m = (r.get("latency") or {}).get("measured")
    if m:
        print(
            f"latency ({m['backend']}, batch {m['batch']}, measured side by side): "
            f"{m['teacher_ms']:.2f} -> {m['student_ms']:.2f} ms ({m['speedup']:.2f}x faster)"
        )
    p = (r.get("latency") or {}).get("predicted")
    if p:
        print(
            f"latency predicted by the table: {p['predicted_before_ms']:.2f} -> "
            f"{p['predicted_after_ms']:.2f} ms"
        )
    deltas = ", ".join(f"{k} {v:+.1f}" for k, v in r["deltas_points"].items())
    print(f"metric deltas (points): {deltas}")
    print(f"student: {result.checkpoint}  report: {result.paths['markdown']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
