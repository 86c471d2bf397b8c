"""`mtc-probes`: export a model's latency probes (a probe bundle) for timing on the machine that
will run it with the torch-free `mtc-latency`; the resulting table drives
`mtc-compress --target latency --latency-table FILE`. It lives in `export` because the FP16
anchors that strongly typed TensorRT needs come from the export's FP16 converter.

    mtc-probes --teacher runs/teacher/best.pt --imgsz 384 640 --batch 1 -o probes/
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from compressor.cli.common import parse_pair
from runtime.cli_kernel import Parser, check_input_path, check_output_dir, run_cli
from runtime.errors import MtcError


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="mtc-probes", description=__doc__.split("\n\n")[0])
    p.add_argument("--teacher", required=True, help="checkpoint of the model to be pruned (.pt)")
    p.add_argument("-o", "--out", type=Path, required=True, help="bundle folder to write")
    p.add_argument(
        "--imgsz", nargs=2, type=int, metavar=("H", "W"), help="default: the checkpoint's"
    )
    p.add_argument("--batch", type=int, default=1, help="batch the deploy machine runs")
    p.add_argument("--round-to", type=int, default=8, help="width step of the probe grid")
    p.add_argument("--min-width", type=int, default=8, help="smallest width probed")
    p.add_argument(
        "--protect", action="append", default=[], metavar="MODULE", help="as for mtc-compress"
    )
    p.add_argument(
        "--fp16-anchors",
        action="store_true",
        help="also write FP16 ONNX of the whole-model anchors (TensorRT 11.x, strongly typed)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle")
    return p


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    out: Path = check_output_dir(args.out)
    check_input_path(args.teacher, "--teacher", "a checkpoint (.pt)")
    if (out / "probes.json").exists() and not args.overwrite:
        raise MtcError(f"{out} already holds a probe bundle; pass --overwrite to replace it")
    if args.batch < 1:
        raise MtcError(f"--batch must be >= 1, got {args.batch}")
    from compressor.checkpoint import load_checkpoint
    from compressor.latency import export_probe_bundle
    from compressor.models.registry import spec_of

    model, ckpt = load_checkpoint(args.teacher)
    ms = spec_of(model)
    hw = parse_pair(args.imgsz, "--imgsz") or tuple(
        ckpt.preprocess.get("input_hw") or ms.preprocess.input_hw
    )
    protected = tuple(ms.protected) + tuple(args.protect)
    export_probe_bundle(
        model,
        out,
        hw,
        args.batch,
        protected=protected,
        round_to=args.round_to,
        min_width=args.min_width,
        model_name=ckpt.model_name,
        fp16_anchor=_fp16 if args.fp16_anchors else None,
    )
    print(
        f"wrote probe bundle {out} ({ckpt.model_name}, {hw[1]}x{hw[0]}, batch {args.batch}); "
        f"time it on the deploy machine: mtc-latency {out} --backend tensorrt -o table.json"
    )
    return 0


def _fp16(model: Any) -> Any:
    from export.fp16.convert import convert_to_fp16

    return convert_to_fp16(model)[0]


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv, prog="mtc-probes")


if __name__ == "__main__":
    sys.exit(main())
