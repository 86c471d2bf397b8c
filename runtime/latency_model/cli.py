"""`mtc-latency`: time a probe bundle on this machine's backend and write the latency table
(torch-free: runs on the vehicle computer). The bundle comes from `mtc-probes` on the
workstation; the table goes back to `mtc-compress --target latency --latency-table FILE`.

    mtc-latency probes/ --backend tensorrt --precision fp16 -o orin_trt_fp16.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from runtime.cli_kernel import CliInterrupted, Parser, check_input_path, check_output_file, run_cli
from runtime.errors import MtcError


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="mtc-latency", description=__doc__.split("\n\n")[0])
    p.add_argument("bundle", type=Path, help="probe bundle folder (from mtc-probes)")
    p.add_argument("-o", "--out", type=Path, required=True, help="latency table to write (.json)")
    p.add_argument("--backend", default="onnxruntime", help="onnxruntime | tensorrt")
    p.add_argument(
        "--precision", default=None, help="fp32 | fp16 (default: fp32 ORT, fp16 TensorRT)"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="ONNX Runtime intra-op threads (1: thread CPU clock, stable under load; 0: ORT default)",
    )
    p.add_argument("--restart", action="store_true", help="ignore a partial measurement")
    p.add_argument("--overwrite", action="store_true", help="replace an existing table")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    return p


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse an output path that cannot be written, before any timing work."""
    check_output_file(out, "-o", (".json",))
    if out.exists() and not overwrite:
        raise MtcError(f"{out} already exists; pass --overwrite to replace it")


def run(args: argparse.Namespace) -> dict:
    from runtime.latency_model.bundle import load_bundle
    from runtime.latency_model.measure import MeasureConfig, TqdmProgress, measure_bundle
    from runtime.latency_model.timers import get_timer

    check_out(args.out, args.overwrite)
    check_input_path(args.bundle, "bundle", "a probe bundle folder from mtc-probes")
    bundle = load_bundle(args.bundle)
    timer_cls = get_timer(args.backend)
    precision = args.precision or ("fp16" if args.backend == "tensorrt" else "fp32")
    if args.threads < 0:
        raise MtcError(f"--threads must be >= 0, got {args.threads}")
    timer = timer_cls(precision, args.threads or None)
    bar = TqdmProgress("latency probes", enabled=not args.no_progress)
    try:
        table = measure_bundle(
            bundle, timer, args.out, MeasureConfig(resume=not args.restart), progress=bar
        )
    finally:
        bar.close()
    return {
        "table": str(args.out),
        "key": table.key.to_dict(),
        "predicted_full_ms": round(table.predict(), 4),
        "anchors_ms": {a.name: round(a.ms, 4) for a in table.anchors},
        "probes": len(table.probes),
        "cells": table.meta.get("cells"),
        "seconds": table.meta.get("seconds"),
        "grid": table.meta.get("grid"),
        "channel_block": table.meta.get("channel_block"),
        "channel_steps": table.meta.get("channel_steps"),
        "cell_model": table.cell_model,
    }


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    from runtime.latency_model.measure import MeasureInterrupted
    from runtime.latency_model.table import split_block

    try:
        summary = run(args)
    except MeasureInterrupted as e:
        raise CliInterrupted(str(e)) from None
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        k = summary["key"]
        print(
            f"wrote {summary['table']}: {summary['probes']} probes, {summary['cells']} widths in "
            f"{summary['seconds']} s on {k['backend']} {k['precision']} ({k['device']}), "
            f"model {summary['predicted_full_ms']:.2f} ms per batch of {k['batch']}"
        )
        cm = summary["cell_model"]
        errors = ", ".join(f"{m} {e['abs']:.1%}" for m, e in cm["cell_error"].items())
        print(
            f"cell model: {cm['model']} ({cm['chosen_by']}"
            + (f"; error on {cm['holdout_cells']} held-out cells: {errors}" if errors else "")
            + f"); channel block {summary['channel_block']} "
            f"({table_block_source(summary['channel_steps'])})"
        )
        step = (summary["grid"] or {}).get("round_to")
        block = split_block(summary["channel_block"], step)
        if block is not None:
            print(
                f"note: this backend computes convolutions in blocks of {block} channels, the "
                f"probes were exported on round_to {step}: export them with "
                f"mtc-probes --round-to {block}: a plan on the block (mtc-compress's default) "
                "then reads measured widths instead of interpolating across the steps"
            )
    return 0


def table_block_source(steps: dict | None) -> str:
    """What the step sweep measured, for the summary line."""
    if not steps or steps.get("block") is None:
        return "the step sweep could not tell"
    found = steps["block"]
    return "measured: no channel steps" if found == 1 else f"measured steps of {found}"


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv, prog="mtc-latency")


if __name__ == "__main__":
    sys.exit(main())
