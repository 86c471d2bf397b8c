"""`mtc-demo`: the whole pipeline, one command (thin layer over `demo.run.run_demo`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from runtime.cli_kernel import (
    CliInterrupted,
    Parser,
    check_input_path,
    check_output_dir,
    run_cli,
)


def _round_to_arg(text: str) -> int | str:
    """'auto' or an integer (the demo's config checks its range)."""
    return text if text == "auto" else int(text)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="mtc-demo",
        description="Synthetic (or real, --data) BDD100K -> teacher -> task-aware prune -> "
        "distill -> evaluate -> export (ONNX, FP16 ONNX, guarded INT8 ONNX, engine where TensorRT "
        "exists) -> "
        "torch-free runtime -> <out>/report.md",
    )
    p.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    p.add_argument(
        "--data",
        help="a real BDD100K root (YOLOP or official layout): real-size "
        "settings (640x384, full YOLOP); default: generate a synthetic set",
    )
    p.add_argument("--source", help="extra frames (folder, glob or video) for overlays/latency")
    p.add_argument(
        "--engine",
        choices=("auto", "fp16", "fp32", "none"),
        default=None,
        help="TensorRT engine (auto: fp16 where TensorRT is installed)",
    )
    p.add_argument(
        "--no-int8",
        action="store_true",
        help="skip the student's guarded INT8 ONNX (calibration + per-task guard)",
    )
    p.add_argument("--n-train", type=int, help="synthetic train images (default 256)")
    p.add_argument("--n-val", type=int, help="synthetic val images (default 96)")
    p.add_argument("--teacher-epochs", type=int)
    p.add_argument("--distill-epochs", type=int)
    p.add_argument(
        "--target", choices=("latency", "params", "flops"), help="what --ratio removes (latency)"
    )
    p.add_argument("--ratio", type=float, help="fraction of the target to remove (default 0.36)")
    p.add_argument(
        "--max-group-ratio",
        type=float,
        help="most of any one channel group the plan may remove (default 0.5; 1 = no cap)",
    )
    p.add_argument(
        "--round-to",
        type=_round_to_arg,
        metavar="N|auto",
        help="channel widths the plan keeps are multiples of this (default: the latency "
        "table's channel block, 16 on ONNX Runtime CPU with AVX-512, else 8)",
    )
    p.add_argument(
        "--latency-cache",
        help="folder for the measured latency table (default $MTC_CACHE_DIR or ~/.cache/mtc)",
    )
    p.add_argument("--kd-weight", type=float, help="feature-distillation weight (default 0.1)")
    p.add_argument("--width", type=float, help="teacher width multiplier (default 0.75)")
    p.add_argument("--importance", help="random|l1|taylor_sum|tci|tci_gcp (default tci_gcp)")
    p.add_argument("--no-kd", action="store_true", help="prune without distillation")
    p.add_argument(
        "--model",
        help="registered model to train and compress (default yolop; e.g. twinlitenet)",
    )
    p.add_argument("--imgsz", type=int, nargs=2, metavar=("H", "W"))
    p.add_argument("--device", help="auto|cpu|cuda|cuda:N")
    p.add_argument("--seed", type=int)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="run again into an --out that holds a previous demo run (its data set is reused)",
    )
    return p


def _main(argv: Sequence[str] | None) -> int:
    a = build_parser().parse_args(argv)
    # imported here, under the kernel: without torch this is one line naming the extra
    from demo.run import DemoConfig, run_demo, with_overrides

    check_output_dir(a.out, "--out")
    if a.data:
        check_input_path(a.data, "--data", "a BDD100K root")
    overrides = dict(
        out=a.out,
        source=a.source,
        engine=a.engine,
        n_train=a.n_train,
        n_val=a.n_val,
        teacher_epochs=a.teacher_epochs,
        distill_epochs=a.distill_epochs,
        ratio=a.ratio,
        max_group_ratio=a.max_group_ratio,
        round_to=a.round_to,
        latency_cache=a.latency_cache,
        kd_weight=a.kd_weight,
        width=a.width,
        target=a.target,
        importance=a.importance,
        imgsz=tuple(a.imgsz) if a.imgsz else None,
        model=a.model,
        device=a.device,
        seed=a.seed,
        kd=False if a.no_kd else None,
        int8=False if a.no_int8 else None,
        progress=False if a.quiet else None,
        overwrite=True if a.overwrite else None,
    )
    base = DemoConfig.real(a.data) if a.data else DemoConfig()
    try:
        result = run_demo(with_overrides(base, **overrides))
    except KeyboardInterrupt:
        raise CliInterrupted(
            f"finished stages are kept in {a.out}; run again with --overwrite (a synthetic "
            "data set there is reused)"
        ) from None
    print(f"done: {result.report_md}")
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    sys.exit(run_cli(_main, argv, prog="mtc-demo"))


if __name__ == "__main__":
    main()
