"""`mtc-synth`: write a synthetic data set in YOLOP's BDD100K layout (thin layer over
`compressor.data.synth.generate`)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from runtime.cli_kernel import CliInterrupted, Parser, check_output_dir, run_cli


def build_parser() -> argparse.ArgumentParser:
    from compressor.data.synth import SynthConfig

    d = SynthConfig.__dataclass_fields__
    p = Parser(
        prog="mtc-synth",
        description="Generate a seeded synthetic driving data set (images, BDD label JSON, "
        "drivable and lane masks) in YOLOP's BDD100K folder layout.",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder (created)")
    p.add_argument("--n-train", type=int, default=d["n_train"].default, help="train images")
    p.add_argument("--n-val", type=int, default=d["n_val"].default, help="val images")
    p.add_argument("--width", type=int, default=d["width"].default, help="image width, px")
    p.add_argument("--height", type=int, default=d["height"].default, help="image height, px")
    p.add_argument("--seed", type=int, default=d["seed"].default, help="master seed")
    p.add_argument(
        "--lane-width-wide",
        type=int,
        default=d["lane_width_wide"].default,
        help="lane mask width in ll_seg_annotations (training labels), px",
    )
    p.add_argument(
        "--lane-width-thin",
        type=int,
        default=d["lane_width_thin"].default,
        help="lane mask width in ll_seg_annotations_thin (YOLOP eval labels), px",
    )
    p.add_argument("--jpeg-quality", type=int, default=d["jpeg_quality"].default)
    p.add_argument(
        "--workers",
        type=int,
        default=d["workers"].default,
        help="processes (0 or 1: in this process)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a data set already in --out (only the layout folders)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv, prog="mtc-synth")


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    from compressor.data.synth import SynthConfig, generate

    check_output_dir(args.out, "--out")
    cfg = SynthConfig(
        out=args.out,
        n_train=args.n_train,
        n_val=args.n_val,
        width=args.width,
        height=args.height,
        seed=args.seed,
        lane_width_wide=args.lane_width_wide,
        lane_width_thin=args.lane_width_thin,
        jpeg_quality=args.jpeg_quality,
        workers=args.workers,
        overwrite=args.overwrite,
    )
    try:
        report = generate(cfg, progress=not args.no_progress)
    except KeyboardInterrupt:
        raise CliInterrupted(
            f"{args.out} holds an incomplete data set (no manifest); run the same command with "
            "--overwrite to generate it again"
        ) from None
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    print(
        f"wrote {report.counts['train']} train + {report.counts['val']} val images to "
        f"{report.out} in {report.seconds:.1f} s ({report.images_per_s:.1f} images/s)"
    )
    for split, objs in report.objects.items():
        print(f"  {split:5s} " + ", ".join(f"{k}: {v}" for k, v in objs.items()))
    print(f"manifest: {report.manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
