"""Fill the runtime's `Sidecar` for each artifact. The schema is the runtime's (one place); this
module only knows where each value comes from: the checkpoint, the export options, the graph,
the TensorRT build."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from export.deploy import DeploySpec
from export.onnx_export import LoadedModel
from export.tensorrt_build import BuiltEngine
from runtime.io_names import (
    DET_COUNT,
    DET_LAYOUT_XYXY,
    DET_OUTPUT,
    INPUT_NAME,
    SEG_ARGMAX,
    SEG_LOGITS,
)
from runtime.sidecar import (
    BatchRange,
    DeployThresholds,
    DetInfo,
    InputInfo,
    ModelInfo,
    PreprocessInfo,
    SegInfo,
    Sidecar,
    TensorInfo,
    TensorRTInfo,
)
from runtime.spec import SEG_TASKS


@dataclass(frozen=True)
class GraphFacts:
    """What every sidecar of one export shares."""

    imgsz: tuple[int, int]
    det_rows: int  # N candidates, or K = min(max_det, N) with NMS in the graph
    num_seg_classes: int
    batch: BatchRange
    params: int | None
    flops: float | None


def outputs_for(spec: DeploySpec, facts: GraphFacts) -> tuple[TensorInfo, ...]:
    h, w = facts.imgsz
    outs = [TensorInfo(DET_OUTPUT, (-1, facts.det_rows, 6), "float32")]
    if spec.nms_in_graph:
        outs.append(TensorInfo(DET_COUNT, (-1,), "int32"))
    for t in SEG_TASKS:
        outs.append(
            TensorInfo(t, (-1, h, w), "uint8")
            if spec.seg_argmax
            else TensorInfo(t, (-1, facts.num_seg_classes, h, w), "float32")
        )
    return tuple(outs)


def preprocess_for(loaded: LoadedModel, imgsz: tuple[int, int]) -> PreprocessInfo:
    p, d = loaded.preprocess, PreprocessInfo()
    return PreprocessInfo(
        input_hw=imgsz,
        mean=tuple(float(v) for v in p.get("mean", d.mean)),  # type: ignore[arg-type]
        std=tuple(float(v) for v in p.get("std", d.std)),  # type: ignore[arg-type]
        letterbox=bool(p.get("letterbox", d.letterbox)),
        pad_value=int(p.get("pad_value", d.pad_value)),
        color=str(p.get("color", d.color)),
        scale=d.scale,
    )


def det_for(loaded: LoadedModel, spec: DeploySpec, facts: GraphFacts) -> DetInfo:
    # Informational (the decode is in the graph); empty for a model that declares none.
    anchors_t = getattr(loaded.model, "det_anchors", None)
    anchors = (
        tuple(tuple((float(a), float(b)) for a, b in lvl) for lvl in anchors_t.tolist())
        if anchors_t is not None
        else ()
    )
    strides = tuple(int(s) for s in getattr(loaded.model, "det_strides", ()))
    return DetInfo(
        decoded_in_graph=True,
        nms_in_graph=spec.nms_in_graph,
        conf_thres=spec.conf_thres,
        iou_thres=spec.iou_thres,
        max_det=facts.det_rows if spec.nms_in_graph else spec.max_det,
        anchors=anchors,
        strides=strides,
        class_names=tuple(loaded.class_names),
        layout=DET_LAYOUT_XYXY,
        # The export's conf/iou/max_det above are the evaluation ones (and the graph's, with NMS
        # in the graph); the runtime applies these unless told otherwise.
        deploy=DeployThresholds(),
    )


def make_sidecar(
    artifact: Path,
    precision: str,
    loaded: LoadedModel,
    spec: DeploySpec,
    facts: GraphFacts,
    engine: BuiltEngine | None = None,
    source_onnx_sha256: str | None = None,
) -> Sidecar:
    """Sidecar for an artifact already on disk at `artifact` (its hash is read from there)."""
    h, w = facts.imgsz
    trt = None
    if engine is not None:
        trt = TensorRTInfo(
            engine.version,
            engine.gpu,
            engine.build_flags,
            engine.fp16_path,
            engine.timing_cache,
            engine.dla_core,
        )
    return Sidecar.for_artifact(
        artifact,
        input=InputInfo(INPUT_NAME, (-1, 3, h, w), "float32", "NCHW"),
        batch=facts.batch,
        outputs=outputs_for(spec, facts),
        preprocess=preprocess_for(loaded, facts.imgsz),
        det=det_for(loaded, spec, facts),
        seg=SegInfo(SEG_TASKS, SEG_ARGMAX if spec.seg_argmax else SEG_LOGITS),
        precision=precision,
        model=ModelInfo(loaded.model_name, facts.params, facts.flops, loaded.checkpoint_sha256),
        tensorrt=trt,
        source_onnx_sha256=source_onnx_sha256,
    )
