"""`export_model`: checkpoint or model -> verified ONNX (+ FP16 ONNX) -> TensorRT engine, each
artifact with its sidecar, plus a ready trtexec command and build script, and
`export_summary.json`. This file only orders the stages (`stages`, each over the one
`ExportRun`), times them and leaves no trace of a failed export."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

from torch import nn
from tqdm import tqdm

from compressor.models.spec import ModelSpec
from export import stages
from export.config import ExportConfig
from export.errors import Int8Error
from export.int8 import stage as int8_stage
from export.outputs import check_export_folder
from export.run import ExportResult, ExportRun
from export.staging import prepare_output_dir
from runtime.cli_kernel import check_output_dir

# The export, in order. Each stage reads the run and writes its results onto it.
STAGES: tuple[tuple[str, Callable[[ExportRun], None]], ...] = (
    ("load", stages.load),  # checkpoint -> model, plan
    ("inputs", int8_stage.check_inputs),  # --int8: calibration / guard data fit the model
    ("onnx", stages.to_onnx),  # hop 1: torch -> simplified ONNX
    ("parity", stages.parity),  # ONNX Runtime vs PyTorch
    ("lint", stages.lint),  # would TensorRT parse it?
    ("fp16", stages.to_fp16),  # hop 2: FP16 ONNX, agreement, lint
    ("int8", int8_stage.to_int8),  # hop 2b: calibrate, Q/DQ, per-task guard (--int8)
    ("write", stages.write),  # ONNX + sidecars + build scripts, read back by the runtime
    ("engine", stages.engine),  # hop 3: engine + sidecar, verified; the summary
)


def _name(cfg: ExportConfig, source: str | Path | nn.Module) -> str:
    if cfg.output.name:
        return cfg.output.name
    if isinstance(source, (str, Path)):
        return Path(source).stem
    return str(getattr(source, "model_name", type(source).__name__))


def _run_stages(run: ExportRun) -> None:
    with tqdm(
        total=len(STAGES),
        desc="mtc-export",
        file=sys.stderr,
        disable=not run.cfg.output.progress,
        leave=False,
    ) as bar:
        for name, stage in STAGES:
            start = time.perf_counter()
            bar.set_postfix_str(name)
            stage(run)
            run.summary.timings_s[name] = round(time.perf_counter() - start, 3)
            bar.update(1)
    # export_summary.json was written inside the engine stage; the result also has its time
    run.result.summary = run.summary.to_dict()


def export_model(
    source: str | Path | nn.Module,
    config: ExportConfig | None = None,
    spec: ModelSpec | None = None,
    model: nn.Module | None = None,
) -> ExportResult:
    """Export a checkpoint path (ours, or a registered model's official file) or a model to
    verified artifacts. A model that is not registered passes its `spec` (and, for a
    checkpoint path, the `model` architecture to load it into).

    Raises a subclass of `ExportError` (an `MtcError`) on anything the user can fix; on failure
    before the ONNX is verified nothing is left in the output folder. When only the engine is
    missing (no TensorRT), the ONNX artifacts are written and the error carries `.result`."""
    cfg = config or ExportConfig()
    out = Path(cfg.output.dir)
    created = not out.exists()
    check_output_dir(cfg.output.dir, "-o")
    check_export_folder(out, _name(cfg, source), cfg.output.overwrite)
    run = ExportRun(cfg, source, prepare_output_dir(out), spec, model)
    try:
        _run_stages(run)
    except BaseException:
        if created and not any(run.out_dir.iterdir()):
            run.out_dir.rmdir()  # a failed export leaves no trace, not even its folder
        raise
    if run.int8_error is not None:  # the other artifacts are written; the INT8 one is not
        raise Int8Error(f"{run.int8_error} (kept in {run.out_dir})", result=run.result)
    return run.result


__all__ = ["ExportResult", "export_model"]
