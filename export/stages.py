"""The export steps `pipeline` runs in order, each a small function over the lazy loaders:
resolve the plan, make and verify the ONNX, make and verify the FP16 ONNX, stage artifacts with
sidecars, build and verify the engine."""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import onnx
import torch

from compressor.models.spec import ModelSpec
from export.checks.inputs import probe_cases
from export.checks.ort import OrtModel
from export.checks.parity import check_parity, require_parity
from export.config import ExportConfig, check_imgsz, default_timing_cache_dir, resolve_trt_target
from export.errors import ExportConfigError
from export.fp16.agreement import fp16_agreement, require_fp16_agreement
from export.fp16.convert import Fp16Info, Fp16OnnxFromOnnx
from export.fp16.emulation import emulate_fp16
from export.fp16.ranges import wide_range_outputs
from export.onnx.deploy import DeploySpec, DeployWrapper
from export.onnx.simplify import SimplifiedOnnx, SimplifierInfo
from export.onnx.trace import LoadedModel, OnnxFromModel
from export.sidecars import GraphFacts, make_sidecar
from export.tensorrt.build import BuiltEngine, EngineBuildConfig, EngineFromOnnx, installed_version
from export.tensorrt.lint import LintReport, lint_onnx, require_lint
from export.tensorrt.scripts import (
    plan_for_target,
    trtexec_command,
    write_build_script,
    write_trtexec_script,
)
from runtime.io_names import INPUT_NAME
from runtime.sidecar import BatchRange, sidecar_path

__all__ = ["LintReport", "require_lint"]


@dataclass(frozen=True)
class ExportPlan:
    name: str
    imgsz: tuple[int, int]
    spec: DeploySpec
    trt_target: str
    trt_installed: str | None
    build: EngineBuildConfig


def resolve_plan(cfg: ExportConfig, loaded: LoadedModel, source: Any) -> ExportPlan:
    """Defaults resolved in one place: size from the checkpoint, name from its file, TensorRT
    target from what is installed."""
    ms = loaded.spec
    imgsz = check_imgsz(
        cfg.imgsz or loaded.preprocess.get("input_hw", ms.preprocess.input_hw),
        ms.stride,
        f"model {ms.name!r}",
    )
    name = cfg.name or (Path(source).stem if isinstance(source, (str, Path)) else loaded.model_name)
    spec = deploy_spec_for(cfg, ms, loaded.model, imgsz)
    installed = installed_version()
    build = EngineBuildConfig(
        cfg.engine,
        INPUT_NAME,
        (3, *imgsz),
        cfg.min_batch,
        cfg.batch,
        cfg.max_batch,
        cfg.workspace_mib,
        cfg.opt_level,
        Path(cfg.timing_cache_dir) if cfg.timing_cache_dir else default_timing_cache_dir(),
        cfg.dla_core,
    )
    return ExportPlan(
        name, imgsz, spec, resolve_trt_target(cfg.trt_target, installed), installed, build
    )


def deploy_spec_for(
    cfg: ExportConfig, ms: ModelSpec, model: torch.nn.Module, imgsz: tuple[int, int]
) -> DeploySpec:
    """The graph's outputs from the model spec: a detection output when it has a detection
    task (raw, for the runtime's decoder, when the model does not decode in its graph), one
    output per segmentation task."""
    det = ms.det
    if det is not None and not ms.decoded_in_graph and cfg.nms_in_graph:
        raise ExportConfigError(
            f"--nms-in-graph needs boxes decoded in the graph; model {ms.name!r} leaves decoding "
            f"to the runtime's {det.decoder!r} decoder: export without --nms-in-graph"
        )
    return DeploySpec(
        cfg.nms_in_graph,
        cfg.seg_output == "argmax",
        cfg.conf_thres,
        cfg.iou_thres,
        cfg.max_det,
        det_decoder=det.decoder if det is not None else None,
        det_raw=det is not None and not ms.decoded_in_graph,
        seg_tasks=tuple(t.name for t in ms.seg_tasks),
        input_hw=imgsz,
        decoder_params=ms.decoder_info(model),
    )


def describe_source(loaded: LoadedModel, plan: ExportPlan) -> dict:
    return {
        "name": plan.name,
        "imgsz": list(plan.imgsz),
        "trt_target": plan.trt_target,
        "tensorrt_installed": plan.trt_installed,
        "source": {
            "checkpoint": loaded.checkpoint_path,
            "sha256": loaded.checkpoint_sha256,
            "model": loaded.model_name,
            "model_config": loaded.model_config,
        },
        "versions": {
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": importlib.import_module("onnxruntime").__version__,
        },
    }


def make_onnx(
    loaded: LoadedModel, plan: ExportPlan, cfg: ExportConfig
) -> tuple[onnx.ModelProto, DeployWrapper, SimplifierInfo]:
    raw = OnnxFromModel(loaded.model, plan.spec, plan.imgsz, cfg.opset, cfg.seed, loaded.spec)
    model, info = SimplifiedOnnx(raw, cfg.simplifier).with_info()
    meta = {
        "mtc.exporter": f"torch.onnx TorchScript (torch {torch.__version__})",
        "mtc.opset": str(cfg.opset),
        "mtc.simplifier": f"{info.name} {info.version or ''}".strip(),
    }
    onnx.helper.set_model_props(model, meta)
    return model, raw.wrapper(), info


def probe(plan: ExportPlan, loaded: LoadedModel, cfg: ExportConfig) -> list:
    big = max(1, min(cfg.max_batch, cfg.parity_batch_cap))
    p, default = loaded.preprocess, loaded.spec.preprocess.to_dict()
    return probe_cases(
        plan.imgsz, (1, big), cfg.seed, p.get("mean", default["mean"]), p.get("std", default["std"])
    )


def parity(wrapper: DeployWrapper, model: onnx.ModelProto, cases: list, cfg: ExportConfig) -> dict:
    report = check_parity(wrapper, OrtModel(model), cases, cfg.parity)
    require_parity(report)
    return report.to_dict()


def lint(model: onnx.ModelProto, target: str) -> LintReport:
    return lint_onnx(model, target)


def to_json(data: dict) -> str:
    return json.dumps(data, indent=2, default=str) + "\n"


def make_fp16(
    fp32: onnx.ModelProto, cases: list, plan: ExportPlan, cfg: ExportConfig
) -> tuple[onnx.ModelProto, Fp16Info, dict]:
    """The FP16 ONNX, and its agreement with FP32 twice: as ONNX Runtime CPU runs the artifact
    (FP16 weights, mostly FP32 compute) and under FP16 rounding emulation (what a GPU does).
    Both must meet the thresholds."""
    wide = wide_range_outputs(fp32, [images for _, images in cases])
    keep = cfg.fp16_keep_resize_fp32
    model, info = Fp16OnnxFromOnnx(lambda: fp32, keep, wide).with_info()
    info = replace(info, kept_fp32_for_range=tuple(sorted(wide)))
    ref = OrtModel(fp32)
    reports = {}
    for label, other in (
        ("onnxruntime", model),
        ("emulated", emulate_fp16(fp32, keep, wide)),
    ):
        rep = fp16_agreement(ref, OrtModel(other), cases, plan.spec, cfg.fp16)
        require_fp16_agreement(rep, f"FP16 ONNX ({label})")
        reports[label] = rep.to_dict()
    return model, info, reports


def facts_for(plan: ExportPlan, loaded: LoadedModel, fp32: onnx.ModelProto) -> GraphFacts:
    count_cost = importlib.import_module("compressor.flops").count_cost
    cost = count_cost(loaded.model, plan.imgsz)
    b = plan.build
    det_rows = det_width = 0
    if plan.spec.has_det:
        dims = fp32.graph.output[0].type.tensor_type.shape.dim
        det_rows, det_width = int(dims[1].dim_value), int(dims[2].dim_value)
    return GraphFacts(
        plan.imgsz,
        det_rows,
        {t.name: t.num_classes for t in loaded.spec.seg_tasks},
        BatchRange(b.min_batch, b.opt_batch, b.max_batch),
        cost.params,
        float(cost.flops),
        det_width,
    )


def stage_onnx(
    staging: Any,
    fp32: onnx.ModelProto,
    fp16: onnx.ModelProto | None,
    loaded: LoadedModel,
    plan: ExportPlan,
    facts: GraphFacts,
    cases: list,
) -> dict:
    """Write ONNX + sidecar pairs into the staging folder and read each back via the runtime."""
    from export.checks.readback import check_with_runtime

    checks = {}
    label, images = cases[-1]
    for model, fname, precision in (
        (fp32, f"{plan.name}.onnx", "fp32"),
        (fp16, f"{plan.name}_fp16.onnx", "fp16"),
    ):
        if model is None:
            continue
        path = staging.write_bytes(fname, model.SerializeToString())
        side = make_sidecar(path, precision, loaded, plan.spec, facts)
        side.write(staging.path(sidecar_path(path).name))
        checks[fname] = {"case": label, **check_with_runtime(path, images, OrtModel(model)(images))}
    return checks


def stage_scripts(staging: Any, plan: ExportPlan, cfg: ExportConfig, has_fp16: bool) -> dict:
    precision = cfg.engine if cfg.engine != "none" else ("fp16" if has_fp16 else "fp32")
    tplan = plan_for_target(plan.name, precision, plan.trt_target, has_fp16, cfg.timing_cache_dir)
    sh = write_trtexec_script(staging.path(f"{plan.name}_trtexec.sh"), tplan, plan.build)
    py = write_build_script(staging.path(f"{plan.name}_build_engine.py"), tplan, plan.build)
    out_dir = Path(cfg.output_dir)
    return {
        "target": plan.trt_target,
        "precision": precision,
        "fp16_path": tplan.fp16_path,
        "trtexec": " ".join(trtexec_command(tplan, plan.build)),
        "trtexec_script": str(out_dir / sh.name),
        "build_script": str(out_dir / py.name),
    }


def build_engine(plan: ExportPlan, cfg: ExportConfig, out_dir: Path, has_fp16: bool) -> BuiltEngine:
    fp32 = (out_dir / f"{plan.name}.onnx").read_bytes
    fp16 = (out_dir / f"{plan.name}_fp16.onnx").read_bytes if has_fp16 else None
    build = replace(plan.build, precision=cfg.engine)
    return EngineFromOnnx(fp32, fp16, build)()


def stage_engine(
    staging: Any,
    built: BuiltEngine,
    loaded: LoadedModel,
    plan: ExportPlan,
    facts: GraphFacts,
    cases: list,
    cfg: ExportConfig,
) -> dict:
    """Engine + sidecar, then the engine (through the runtime) against the FP32 ONNX."""
    from export.checks.readback import runtime_runner
    from runtime.trt_build import batch_range, write_engine_sidecar

    out_dir = Path(cfg.output_dir)
    src = out_dir / (
        f"{plan.name}_fp16.onnx" if built.source == "fp16_onnx" else f"{plan.name}.onnx"
    )
    path = staging.write_bytes(f"{plan.name}_{cfg.engine}.engine", built.plan)
    # The engine's sidecar = the source ONNX's + build facts, as the device build script writes it.
    batch = batch_range(plan.build.input_shapes())
    dest = staging.path(sidecar_path(path).name)
    write_engine_sidecar(path, src, precision=cfg.engine, info=built.info, batch=batch, dest=dest)
    run = runtime_runner(path)
    try:
        ref = OrtModel(onnx.load(str(out_dir / f"{plan.name}.onnx")))
        report = fp16_agreement(ref, run, cases, plan.spec, cfg.fp16)
    finally:
        run.close()  # type: ignore[attr-defined]
    require_fp16_agreement(report)
    return report.to_dict()
