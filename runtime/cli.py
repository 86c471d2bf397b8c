"""`mtc-run`: run an exported artifact over frames and report per-frame latency.

A thin layer: flags -> `CliConfig` (every flag is a field) -> `load_artifact` + `run`. User mistakes
print one `error: ...` line and exit 2; Ctrl-C writes the partial report and exits 130.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.cli_kernel import (
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    CliInterrupted,
    OutputPathError,
    Parser,
    check_output_dir,
    check_output_file,
    run_cli,
)

__all__ = ["EXIT_INTERRUPTED", "EXIT_USAGE", "build_parser", "main"]
DEFAULT_REPORT = "out/latency.json"


@dataclass(frozen=True)
class CliConfig:
    artifact: str
    sources: tuple[str, ...]  # one per camera, in the order given
    backend: str = "auto"
    providers: str | None = None
    memory: str = "auto"
    threads: int | None = None
    cuda_graph: bool = False
    verify_hash: bool = True
    quiet: bool = False
    run: Any = field(default=None)  # runtime.pipeline.RunConfig (imported lazily)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="mtc-run", description=__doc__.splitlines()[0].strip("`: "))
    p.add_argument("artifact", help=".onnx or .engine (its sidecar <artifact>.json beside it)")
    p.add_argument(
        "--source",
        required=True,
        action="append",
        help="video file, camera index (0), rtsp/http URL, image folder or glob; repeat it for "
        "several cameras (one frame of each per batch)",
    )
    p.add_argument(
        "--batch",
        type=int,
        default=None,
        help="frames per inference (default: the number of sources, 1 for one)",
    )
    p.add_argument("--target-fps", type=float, default=30.0, help="fps the verdicts test against")
    p.add_argument("--warmup", type=int, default=2, help="warm-up batches before timing")
    p.add_argument("--max-frames", type=int, default=None, help="stop after N frames")
    p.add_argument(
        "--report",
        default=DEFAULT_REPORT,
        help=f"latency JSON; .md and .png beside it (default {DEFAULT_REPORT})",
    )
    p.add_argument(
        "--save",
        default=None,
        help="overlays: a folder of JPEGs or a .mp4 file; several sources: a folder (one "
        "subfolder camK each) or a pattern with {camera}, e.g. out/cam{camera}.mp4",
    )
    p.add_argument("--backend", default="auto", help="auto | onnxruntime | tensorrt")
    p.add_argument(
        "--providers",
        default=None,
        help="onnxruntime providers in order, e.g. tensorrt,cuda,cpu (default cpu)",
    )
    p.add_argument(
        "--memory", default="auto", help="tensorrt device memory: auto | cuda-python | pycuda"
    )
    p.add_argument(
        "--threads", type=int, default=None, help="onnxruntime intra-op threads (its default)"
    )
    p.add_argument(
        "--cuda-graph",
        action="store_true",
        help="tensorrt: replay each batch size's enqueue as a captured CUDA graph",
    )
    p.add_argument(
        "--no-verify-hash",
        action="store_true",
        help="skip checking the artifact's sha256 against its sidecar",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary table")
    t = p.add_argument_group("detection thresholds (default: the sidecar's deploy block)")
    t.add_argument("--conf", type=float, default=None, help="keep boxes scoring above, (0, 1]")
    t.add_argument("--iou", type=float, default=None, help="NMS IoU threshold, (0, 1]")
    t.add_argument("--max-det", type=int, default=None, help="boxes kept per frame, >= 1")
    t.add_argument("--topk", type=int, default=None, help="best candidates NMS sees per frame")
    o = p.add_argument_group("stages")
    o.add_argument(
        "--no-overlap",
        action="store_true",
        help="run read/preprocess, inference, postprocess/draw one after the other",
    )
    o.add_argument(
        "--queue-depth",
        type=int,
        default=None,
        help="batches that may wait between stages (2 for files, 1 for cameras/streams)",
    )
    o.add_argument(
        "--live-buffer",
        type=int,
        default=None,
        help="frames a camera/stream may queue before the oldest is dropped (2 x batch)",
    )
    o.add_argument(
        "--stall-timeout",
        type=float,
        default=5.0,
        help="seconds a camera/stream may deliver nothing before the run stops (5)",
    )
    o.add_argument(
        "--max-skew-ms",
        type=float,
        default=50.0,
        help="several cameras/streams: capture-time spread allowed within one batch (50)",
    )
    return p


def config_from_args(args: argparse.Namespace) -> CliConfig:
    from runtime.pipeline import RunConfig

    run_cfg = RunConfig(
        batch=args.batch,
        target_fps=args.target_fps,
        warmup=args.warmup,
        max_frames=args.max_frames,
        save=args.save,
        report=args.report,
        progress=not args.quiet,
        keep_results=False,
        conf=args.conf,
        iou=args.iou,
        max_det=args.max_det,
        topk=args.topk,
        overlap=not args.no_overlap,
        queue_depth=args.queue_depth,
        live_buffer=args.live_buffer,
        stall_timeout=args.stall_timeout,
        max_skew_ms=args.max_skew_ms,
    )
    return CliConfig(
        artifact=args.artifact,
        sources=tuple(args.source),
        backend=args.backend,
        providers=args.providers,
        memory=args.memory,
        threads=args.threads,
        cuda_graph=args.cuda_graph,
        verify_hash=not args.no_verify_hash,
        quiet=args.quiet,
        run=run_cfg,
    )


def execute(cfg: CliConfig) -> Any:
    """Load, run, close. Returns the RunResult (raises RunInterrupted on Ctrl-C)."""
    from runtime.pipeline import load_artifact, run

    backend = load_artifact(
        cfg.artifact,
        cfg.backend,
        cfg.providers,
        verify_hash=cfg.verify_hash,
        memory=cfg.memory,
        threads=cfg.threads,
        cuda_graph=cfg.cuda_graph,
    )
    with backend:
        if len(cfg.sources) == 1:
            return run(backend, cfg.sources[0], cfg.run)
        return run(backend, config=cfg.run, sources=list(cfg.sources))


def _summary(result: Any, quiet: bool) -> None:
    if not quiet:
        info = result.report.info
        print(
            f"{info.artifact} on {info.device} | {info.backend} | batch {info.batch} | "
            f"{info.precision} | {info.frames_processed} frames, stopped: {info.stop_reason}"
        )
        print(result.report.table())
    for path in result.report_files:
        print(f"wrote {path}")
    for path in result.overlays_by_camera:
        print(f"wrote {path}")


def _format_warning(message: Any, category: Any, *args: Any, **kwargs: Any) -> str:
    return f"warning: {message}\n"


def check_paths(cfg: CliConfig) -> None:
    """Every output path is checked before the artifact is loaded: a report that cannot be
    written must not cost the whole run."""
    from runtime.cameras import VIDEO_SUFFIXES, save_targets

    check_output_file(cfg.run.report, "--report", suffixes=(".json",))
    if cfg.run.save:
        for save in save_targets(cfg.run.save, len(cfg.sources)):
            is_video = str(save).lower().endswith(VIDEO_SUFFIXES)
            (check_output_file if is_video else check_output_dir)(save, "--save")
            if not is_video:
                for source in cfg.sources:
                    check_not_inputs(save, source)


def check_not_inputs(save: str, source: str) -> None:
    """Overlays are JPEGs named after their frames: --save into the folder the frames come
    from would overwrite the user's images with their overlays."""
    src = Path(source)
    folder = src if src.is_dir() else src.parent if any(c in source for c in "*?[") else None
    if folder is not None and Path(save).resolve() == folder.resolve():
        raise OutputPathError(
            f"--save {save} is the folder the frames are read from; its overlays would overwrite "
            "them: choose another folder"
        )


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv, prog="mtc-run")


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    warnings.formatwarning = _format_warning
    from runtime.pipeline import RunInterrupted

    cfg = config_from_args(args)
    check_paths(cfg)
    try:
        result = execute(cfg)
    except RunInterrupted as e:
        _summary(e.result, args.quiet)
        raise CliInterrupted(f"partial report written to {cfg.run.report}") from None
    _summary(result, args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
