"""The export's stages, in the order `pipeline.STAGES` runs them. Each takes the `ExportRun`,
reads what the earlier stages put there and writes its results (and its part of the summary)
back onto it: load -> onnx -> parity -> lint -> fp16 -> write -> engine."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import onnx
import onnxruntime
import torch
from torch import nn

from compressor.flops import count_cost
from export.checks.inputs import probe_cases
from export.checks.ort import OrtModel
from export.checks.parity import check_parity, require_parity
from export.checks.readback import RuntimeRunner, check_with_runtime
from export.errors import ExportError, LintError, TensorRTUnavailableError
from export.fp16.agreement import fp16_agreement, require_fp16_agreement
from export.fp16.convert import Fp16OnnxFromOnnx
from export.fp16.emulation import emulate_fp16
from export.fp16.ranges import wide_range_outputs
from export.onnx.simplify import SimplifiedOnnx
from export.onnx.trace import OnnxFromModel
from export.onnx.uint8_input import check_uint8_input, uint8_frames, with_uint8_input
from export.outputs import remove_stale_exports
from export.plan import resolve_plan
from export.run import ExportRun
from export.sidecars import GraphFacts, make_sidecar, preprocess_for
from export.source import ModelFromCheckpoint, loaded_from_module
from export.staging import Staging
from export.summary import (
    SUMMARY_FILE,
    ArtifactRecord,
    EngineStatus,
    EngineSummary,
    RuntimeCheck,
    SourceInfo,
    write_summary,
)
from export.tensorrt.build import BuiltEngine, EngineFromOnnx
from export.tensorrt.int8 import (
    Int8Artifacts,
    int8_engine_agreement,
    require_int8_engine_agreement,
)
from export.tensorrt.lint import lint_onnx, require_lint
from export.tensorrt.scripts import (
    plan_for_target,
    trtexec_command,
    write_build_script,
    write_trtexec_script,
)
from runtime.errors import MtcError
from runtime.fileio import atomic_write_text
from runtime.sidecar import BatchRange, sidecar_path


def load(run: ExportRun) -> None:
    """The model (from its checkpoint, or as passed) and the plan resolved from it."""
    cfg, src = run.cfg, run.source
    run.loaded = (
        loaded_from_module(src, cfg.input.imgsz, run.spec)
        if isinstance(src, nn.Module)
        else ModelFromCheckpoint(src, run.model, run.spec)()
    )
    name = cfg.output.name or (
        Path(src).stem if isinstance(src, (str, Path)) else run.loaded.model_name
    )
    run.plan = plan = resolve_plan(cfg, run.loaded, name)
    run.result.name = plan.name
    s, lm = run.summary, run.loaded
    s.name, s.imgsz, s.trt_target, s.tensorrt_installed = (
        plan.name,
        plan.imgsz,
        plan.trt_target,
        plan.trt_installed,
    )
    s.source = SourceInfo(lm.checkpoint_path, lm.checkpoint_sha256, lm.model_name, lm.model_config)
    s.versions = {
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def to_onnx(run: ExportRun) -> None:
    """Trace, simplify, stamp the exporter in the graph's metadata."""
    o, lm = run.cfg.onnx, run.loaded
    raw = OnnxFromModel(lm.model, run.plan.spec, run.plan.imgsz, o.opset, run.cfg.seed, lm.spec)
    model, info = SimplifiedOnnx(raw, o.simplifier).with_info()
    meta = {
        "mtc.exporter": f"torch.onnx TorchScript (torch {torch.__version__})",
        "mtc.opset": str(o.opset),
        "mtc.simplifier": f"{info.name} {info.version or ''}".strip(),
    }
    onnx.helper.set_model_props(model, meta)
    run.fp32, run.wrapper, run.summary.simplifier = model, raw.wrapper(), info


def parity(run: ExportRun) -> None:
    """ONNX Runtime vs PyTorch on the probe inputs (never the tracing input)."""
    big = max(1, min(run.cfg.input.max_batch, run.cfg.checks.parity_batch_cap))
    p, default = run.loaded.preprocess, run.loaded.spec.preprocess.to_dict()
    mean, std = p.get("mean", default["mean"]), p.get("std", default["std"])
    run.cases = probe_cases(run.plan.imgsz, (1, big), run.cfg.seed, mean, std)
    report = check_parity(run.wrapper, OrtModel(run.fp32), run.cases, run.cfg.checks.parity)
    require_parity(report)
    run.summary.parity = report


def lint(run: ExportRun) -> None:
    lint_model(run, run.fp32, "fp32", f"{run.plan.name}.onnx")


def lint_model(run: ExportRun, model: onnx.ModelProto, key: str, artifact: str) -> None:
    """The TensorRT lint of one ONNX; a failure keeps its full report beside the output."""
    rep = lint_onnx(model, run.plan.trt_target)
    run.summary.lint[key] = rep
    t = run.cfg.tensorrt
    if rep.ok or (t.engine == "none" and t.allow_lint_fail):
        return
    path = run.out_dir / f"{Path(artifact).stem}.lint.json"
    atomic_write_text(path, json.dumps(rep.to_dict(), indent=2, default=str) + "\n")
    try:
        require_lint(rep, artifact)
    except LintError as e:
        raise LintError(f"{e} (full report: {path})") from None


def to_fp16(run: ExportRun) -> None:
    """The FP16 ONNX, and its agreement with FP32 twice: as ONNX Runtime CPU runs the artifact
    (FP16 weights, mostly FP32 compute) and under FP16 rounding emulation (what a GPU does).
    Both must meet the thresholds."""
    if not run.cfg.half.enabled:
        return
    fp32, keep = run.fp32, run.cfg.half.keep_resize_fp32
    wide = wide_range_outputs(fp32, [images for _, images in run.cases])
    model, info = Fp16OnnxFromOnnx(lambda: fp32, keep, wide).with_info()
    ref = OrtModel(fp32)
    reports = {}
    for label, other in (("onnxruntime", model), ("emulated", emulate_fp16(fp32, keep, wide))):
        rep = fp16_agreement(ref, OrtModel(other), run.cases, run.plan.spec, run.cfg.checks.fp16)
        require_fp16_agreement(rep, f"FP16 ONNX ({label})")
        reports[label] = rep
    run.fp16 = model
    run.summary.fp16_conversion = replace(info, kept_fp32_for_range=tuple(sorted(wide)))
    run.summary.fp16 = reports
    lint_model(run, model, "fp16", f"{run.plan.name}_fp16.onnx")


def write(run: ExportRun) -> None:
    """ONNX + sidecar pairs (each read back through the runtime) and the build scripts, renamed
    into the output folder together."""
    with Staging(run.out_dir) as staging:
        run.facts = graph_facts(run)
        if run.cfg.input.dtype == "uint8":
            _uint8_input(run)
        _stage_onnx(run, staging)
        run.summary.engine = _stage_scripts(run, staging)
        if run.cfg.output.overwrite:
            remove_stale_exports(run.out_dir, run.plan.name)
        _commit(run, staging)


def _uint8_input(run: ExportRun) -> None:
    """`--input uint8`: each ONNX gets the uint8 NHWC front (export.onnx.uint8_input), checked
    against its float self on letterboxed frames; the read-back then runs uint8 frames."""
    info = preprocess_for(run.loaded, run.plan.imgsz)
    batch = max(1, min(run.cfg.input.max_batch, run.cfg.checks.parity_batch_cap))
    run.facts = replace(run.facts, input_dtype="uint8")
    for attr in ("fp32", "fp16", "int8"):
        model = getattr(run, attr)
        if model is not None:
            wrapped = with_uint8_input(model, info)
            check_uint8_input(model, wrapped, info, batch, run.cfg.seed)
            setattr(run, attr, wrapped)
    run.cases = [(f"uint8-b{batch}", uint8_frames(info, batch, run.cfg.seed))]


def graph_facts(run: ExportRun) -> GraphFacts:
    plan, b = run.plan, run.plan.build
    cost = count_cost(run.loaded.model, plan.imgsz)
    det_rows = det_width = 0
    if plan.spec.has_det:
        dims = run.fp32.graph.output[0].type.tensor_type.shape.dim
        det_rows, det_width = int(dims[1].dim_value), int(dims[2].dim_value)
    return GraphFacts(
        plan.imgsz,
        det_rows,
        {t.name: t.num_classes for t in run.loaded.spec.seg_tasks},
        BatchRange(b.min_batch, b.opt_batch, b.max_batch),
        cost.params,
        float(cost.flops),
        det_width,
    )


def _stage_onnx(run: ExportRun, staging: Staging) -> None:
    label, images = run.cases[-1]
    models = (
        (run.fp32, "fp32", run.onnx_path()),
        (run.fp16, "fp16", run.onnx_path(fp16=True)),
        (run.int8, "int8", run.int8_path()),
    )
    for model, precision, dest in models:
        if model is None:
            continue
        fname = dest.name
        path = staging.write_bytes(fname, model.SerializeToString())
        int8 = run.int8_info if precision == "int8" else None
        side = make_sidecar(path, precision, run.loaded, run.plan.spec, run.facts, int8)
        side.write(staging.path(sidecar_path(path).name))
        check = check_with_runtime(path, images, OrtModel(model)(images))
        run.summary.runtime_check[fname] = RuntimeCheck(label, **check)
    if run.int8 is not None and run.int8_info is not None and run.int8_amax:
        # the same ranges for TensorRT's implicit quantisation (DLA on 10.x): a calibration
        # cache keyed by the FP32 ONNX's tensor names
        from runtime.tensorrt.calibration import write_calibration_cache

        ranges = {k: v for k, v in run.int8_amax.items() if v > 0}  # a dead tensor has no scale
        write_calibration_cache(staging.path(str(run.int8_info.calib_cache)), ranges)


def _stage_scripts(run: ExportRun, staging: Staging) -> EngineSummary:
    plan, t, has_fp16 = run.plan, run.cfg.tensorrt, run.fp16 is not None
    precision = t.engine if t.engine != "none" else ("fp16" if has_fp16 else "fp32")
    calib = Int8Artifacts.beside(run.out_dir, plan.name).calib.name
    tplan = plan_for_target(
        plan.name,
        precision,
        plan.trt_target,
        has_fp16,
        t.timing_cache_dir,
        t.nms,
        dla=t.dla_core is not None,
        calib=calib,
    )
    sh = write_trtexec_script(staging.path(f"{plan.name}_trtexec.sh"), tplan, plan.build)
    py = write_build_script(staging.path(f"{plan.name}_build_engine.py"), tplan, plan.build)
    return EngineSummary(
        target=plan.trt_target,
        precision=precision,
        fp16_path=tplan.fp16_path,
        trt_nms=t.nms,
        trtexec=" ".join(trtexec_command(tplan, plan.build)),
        trtexec_script=str(run.out_dir / sh.name),
        build_script=str(run.out_dir / py.name),
    )


def _commit(run: ExportRun, staging: Staging) -> None:
    for path in staging.commit():
        run.summary.artifacts.append(ArtifactRecord.of(path))


def engine(run: ExportRun) -> None:
    """Build the engine where TensorRT is, verify it through the runtime against the FP32 ONNX,
    keep it with its sidecar; then write the summary, whatever became of the engine."""
    eng, t = _engine_summary(run), run.cfg.tensorrt
    if t.engine == "none" or t.dry_run:
        dry = "--dry-run: build on the target with the script above"
        eng.finish(EngineStatus.SKIPPED, "--engine none" if t.engine == "none" else dry)
        return finish(run)
    try:
        fp16 = run.onnx_path(fp16=True).read_bytes if run.fp16 is not None else None
        side = sidecar_path(run.onnx_path())
        int8 = Int8Artifacts.beside(run.out_dir, run.plan.name)
        if t.engine == "int8":
            int8.require()
        onnx_int8, calib = int8.loaders()
        built = EngineFromOnnx(
            run.onnx_path().read_bytes,
            fp16,
            run.plan.build,
            sidecar=lambda: json.loads(side.read_text()),
            onnx_int8=onnx_int8,
            calib_cache=calib,
        )()
    except TensorRTUnavailableError as e:
        eng.finish(EngineStatus.NOT_BUILT, str(e))
        finish(run)
        raise TensorRTUnavailableError(
            f"{e}. The ONNX artifacts, sidecars and a ready build are in {run.out_dir}: "
            f"run {eng.trtexec_script} or {eng.build_script} on the target",
            result=run.result,
        ) from None
    except ExportError as e:
        eng.finish(EngineStatus.FAILED, str(e))
        finish(run)
        raise
    try:
        _stage_engine(run, built)
    except MtcError as e:  # built, but it could not be verified: nothing is kept
        eng.finish(EngineStatus.FAILED, f"engine not verified: {e}")
        finish(run)
        raise
    finish(run)


def _engine_summary(run: ExportRun) -> EngineSummary:
    if run.summary.engine is None:
        raise ExportError("the engine stage runs after the write stage")  # a pipeline bug
    return run.summary.engine


def _stage_engine(run: ExportRun, built: BuiltEngine) -> None:
    """Engine + sidecar, then the engine (through the runtime) against the FP32 ONNX (an INT8
    engine: against the INT8 ONNX, `_stage_int8_engine`)."""
    from runtime.tensorrt.engine_sidecar import batch_range, write_engine_sidecar

    precision = run.cfg.tensorrt.engine
    int8 = Int8Artifacts.beside(run.out_dir, run.plan.name) if precision == "int8" else None
    with Staging(run.out_dir) as staging:
        src = int8.onnx if built.source == "int8_onnx" and int8 else run.onnx_path()
        src = run.onnx_path(fp16=True) if built.source == "fp16_onnx" else src
        path = staging.write_bytes(f"{run.plan.name}_{precision}.engine", built.plan)
        # The engine's sidecar = the source ONNX's + build facts, as the device build script
        # writes it (an INT8 engine also carries the INT8 ONNX's `int8` block).
        batch = batch_range(run.plan.build.input_shapes())
        dest = staging.path(sidecar_path(path).name)
        write_engine_sidecar(
            path,
            src,
            precision=precision,
            info=built.info,
            batch=batch,
            dest=dest,
            int8_sidecar=int8.sidecar if int8 else None,
        )
        if int8 is not None:
            return _stage_int8_engine(run, built, staging, path, int8)
        with RuntimeRunner(path) as engine_run:
            ref: Any = OrtModel(onnx.load(str(run.onnx_path())))
            spec = run.plan.spec
            if built.nms is not None:  # compare with the runtime's numpy NMS on the ONNX's rows
                ref = numpy_nms_outputs(ref, built.nms, built.nms_rows)
                spec = replace(spec, nms_in_graph=True)
            report = fp16_agreement(ref, engine_run, run.cases, spec, run.cfg.checks.fp16)
        require_fp16_agreement(report)
        _engine_summary(run).mark_built(built, report)
        _commit(run, staging)


def _stage_int8_engine(
    run: ExportRun, built: BuiltEngine, staging: Staging, path: Path, int8: Int8Artifacts
) -> None:
    """The INT8 engine against the INT8 ONNX in ONNX Runtime (same scales on both sides)."""
    with RuntimeRunner(path) as engine_run:
        cfg = run.cfg.checks.fp16
        report = int8_engine_agreement(engine_run, int8.onnx, run.cases, run.plan.spec, cfg)
    require_int8_engine_agreement(report, int8.onnx)
    summary = _engine_summary(run)
    summary.mark_built(built, report)
    summary.parity_reference = "onnx_int8"
    _commit(run, staging)


def numpy_nms_outputs(run: Any, nms: Any, rows: int) -> Any:
    """A runner whose `det` [B, N, 6] becomes what an engine with NMS appended returns (det
    [B, K, 6] best first, zero rows after det_count [B]), by the runtime's own numpy NMS with
    the thresholds baked into the engine."""
    import numpy as np

    from runtime.io_names import DET_COUNT, DET_OUTPUT
    from runtime.postprocess import select_rows
    from runtime.sidecar import DeployThresholds

    t = DeployThresholds(nms.conf_thres, nms.iou_thres, rows, nms.topk)

    def call(images: Any) -> dict:
        out = dict(run(images))
        det = np.zeros((len(out[DET_OUTPUT]), rows, 6), np.float32)
        count = np.zeros(len(det), np.int32)
        for i, cand in enumerate(out[DET_OUTPUT]):
            kept = select_rows(cand, t)
            det[i, : len(kept)], count[i] = kept, len(kept)
        return {**out, DET_OUTPUT: det, DET_COUNT: count}

    return call


def finish(run: ExportRun) -> None:
    """export_summary.json, and the same on the result."""
    r = run.result
    r.report = run.summary
    r.artifacts = [asdict(a) for a in run.summary.artifacts]
    r.summary = run.summary.to_dict()
    r.summary_path = write_summary(run.out_dir / SUMMARY_FILE, r.summary)
