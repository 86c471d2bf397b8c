"""The export's plan, resolved in one place once the model is loaded: artifact name, input size
(the checkpoint's unless given), what the graph outputs (from the model spec), the TensorRT
target (asked for, else the installed one's, else the default) and the engine build settings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from compressor.models.spec import ModelSpec
from export.config import ExportConfig, check_imgsz, resolve_trt_target
from export.errors import ExportConfigError
from export.onnx.deploy import DeploySpec
from export.source import LoadedModel
from export.tensorrt.build import EngineBuildConfig
from runtime.io_names import INPUT_NAME
from runtime.tensorrt.device import default_timing_cache_dir, installed_version


@dataclass(frozen=True)
class ExportPlan:
    name: str
    imgsz: tuple[int, int]
    spec: DeploySpec
    trt_target: str
    trt_installed: str | None
    build: EngineBuildConfig


def resolve_plan(cfg: ExportConfig, loaded: LoadedModel, name: str) -> ExportPlan:
    """Defaults resolved in one place: size from the checkpoint, TensorRT target from what is
    installed."""
    ms = loaded.spec
    imgsz = check_imgsz(
        cfg.input.imgsz or loaded.preprocess.get("input_hw", ms.preprocess.input_hw),
        ms.stride,
        f"model {ms.name!r}",
    )
    spec = deploy_spec_for(cfg, ms, loaded.model, imgsz)
    installed = installed_version()
    b, t = cfg.input, cfg.tensorrt
    build = EngineBuildConfig(
        t.engine,
        INPUT_NAME,
        (3, *imgsz),
        b.min_batch,
        b.batch,
        b.max_batch,
        t.workspace_mib,
        t.opt_level,
        Path(t.timing_cache_dir) if t.timing_cache_dir else default_timing_cache_dir(),
        t.dla_core,
        t.nms,
    )
    target = resolve_trt_target(t.target, installed)
    return ExportPlan(name, imgsz, spec, target, installed, build)


def deploy_spec_for(
    cfg: ExportConfig, ms: ModelSpec, model: torch.nn.Module, imgsz: tuple[int, int]
) -> DeploySpec:
    """The graph's outputs from the model spec: a detection output when it has a detection
    task (raw, for the runtime's decoder, when the model does not decode in its graph), one
    output per segmentation task."""
    det, o = ms.det, cfg.onnx
    if det is not None and not ms.decoded_in_graph and o.nms_in_graph:
        raise ExportConfigError(
            f"--nms-in-graph needs boxes decoded in the graph; model {ms.name!r} leaves decoding "
            f"to the runtime's {det.decoder!r} decoder: export without --nms-in-graph"
        )
    return DeploySpec(
        o.nms_in_graph,
        o.seg_output == "argmax",
        o.conf_thres,
        o.iou_thres,
        o.max_det,
        det_decoder=det.decoder if det is not None else None,
        det_raw=det is not None and not ms.decoded_in_graph,
        seg_tasks=tuple(t.name for t in ms.seg_tasks),
        input_hw=imgsz,
        decoder_params=ms.decoder_info(model),
    )
