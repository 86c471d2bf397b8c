"""`mtc-eval`: score a checkpoint or a deployed artifact under YOLOP's protocol; prints a table,
writes JSON + Markdown.

    mtc-eval out/teacher/best.pt --data DIR --split val --imgsz 384 640 --batch 8 \\
        --det-mode yolop --seg-mode global --lane-labels thin --out report.json
    mtc-eval export_out/student_int8.onnx --data DIR     # through the torch-free runtime
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from compressor.cli.common import Parser, parse_pair, run_cli
from compressor.cli.label_flags import add_label_flags
from compressor.train.config import DET_MODES, LANE_LABELS, SEG_MODES
from compressor.train.eval_artifact import ARTIFACT_SUFFIXES, is_artifact
from compressor.train.eval_checkpoint import EvalJob, evaluate_path, write_eval_report
from compressor.train.evaluate import EvalConfig
from compressor.train.report import eval_text
from runtime.cli_kernel import check_input_path, check_output_file, default_help

S = argparse.SUPPRESS


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="mtc-eval", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "checkpoint",
        metavar="MODEL",
        help="checkpoint (.pt) written by mtc-train / mtc-compress, or an artifact (.onnx, "
        ".engine) written by mtc-export, scored through the runtime with its sidecar",
    )
    p.add_argument("--data", required=True, help="data set root (YOLOP or BDD100K layout)")
    p.add_argument("--split", default=S)
    p.add_argument(
        "--imgsz",
        nargs=2,
        type=int,
        metavar=("H", "W"),
        default=S,
        help="input size (default: the checkpoint's)",
    )
    p.add_argument("--batch", type=int, default=S)
    p.add_argument(
        "--lane-labels",
        dest="lane_labels",
        choices=LANE_LABELS,
        default=S,
        help="thin = YOLOP's evaluation labels, wide = the training ones",
    )
    p.add_argument("--max-images", dest="max_images", type=int, default=S)
    p.add_argument("--workers", type=int, default=S)
    p.add_argument(
        "--skip-bad-images",
        dest="skip_bad_images",
        action="store_true",
        default=S,
        help="leave out samples with truncated files (counted in a warning) instead of stopping",
    )
    add_label_flags(p, S)
    p.add_argument("--device", default=S, help="checkpoints: auto|cpu|cuda|cuda:N")
    p.add_argument(
        "--backend", default=S, help="artifacts: runtime backend (auto: by the sidecar's format)"
    )
    p.add_argument("--threads", type=int, default=S, help="artifacts: ONNX Runtime CPU threads")
    p.add_argument("--det-mode", dest="det_mode", choices=DET_MODES, default=S)
    p.add_argument("--seg-mode", dest="seg_mode", choices=SEG_MODES, default=S)
    p.add_argument("--conf", dest="conf_thres", type=float, default=S)
    p.add_argument("--iou", dest="iou_thres", type=float, default=S)
    p.add_argument("--max-det", dest="max_det", type=int, default=S)
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=S)
    p.add_argument(
        "--out",
        default=S,
        help="report JSON (default: <checkpoint>.eval.json); the Markdown report goes beside it",
    )
    _show_defaults(p)
    return p


def _show_defaults(p: argparse.ArgumentParser) -> None:
    """--help shows the EvalJob / EvalConfig defaults (the parser's own are SUPPRESS)."""
    job, ecfg = EvalJob.__dataclass_fields__, EvalConfig.__dataclass_fields__
    for action in p._actions:
        field = job.get(action.dest) or ecfg.get(action.dest)
        if field is not None and action.dest != "imgsz" and action.default is S:
            action.help = default_help(action.help, field.default)


def job_from_args(args: argparse.Namespace) -> tuple[EvalJob, Path]:
    given = vars(args)
    eval_keys = set(EvalConfig.__dataclass_fields__)
    ecfg = EvalConfig(**{k: v for k, v in given.items() if k in eval_keys})
    rest = {k: v for k, v in given.items() if k not in eval_keys and k != "out"}
    if "imgsz" in rest:
        rest["imgsz"] = parse_pair(rest["imgsz"], "--imgsz")
    job = EvalJob(eval=ecfg, **rest)
    out = Path(given.get("out") or Path(job.checkpoint).with_suffix(".eval.json"))
    return job, out


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv, prog="mtc-eval")


def _main(argv: Sequence[str] | None) -> int:
    job, out = job_from_args(build_parser().parse_args(argv))
    kinds = f"a checkpoint (.pt) or an artifact ({', '.join(ARTIFACT_SUFFIXES)})"
    check_input_path(job.checkpoint, "MODEL", kinds)
    check_input_path(job.data, "--data", "a data set root")
    check_output_file(out, "--out", suffixes=(".json",))  # the .md goes beside it
    if is_artifact(job.checkpoint):
        from runtime.sidecar import read_sidecar

        read_sidecar(job.checkpoint)  # a missing or stale sidecar: one line, before any work
    report = evaluate_path(job)
    json_path, md_path = write_eval_report(report, out, f"Evaluation of {job.checkpoint}")
    print(eval_text(report))
    print(f"report: {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
