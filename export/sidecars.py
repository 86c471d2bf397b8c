"""Fill the runtime's `Sidecar` for each artifact. The schema is the runtime's (one place); this
module only knows where each value comes from: the checkpoint, the export options and the graph
(an engine's build facts are added by `runtime.tensorrt.engine_sidecar`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from export.onnx.deploy import DeploySpec
from export.source import LoadedModel
from runtime.io_names import (
    DET_COUNT,
    DET_LAYOUT_CXCYWH,
    DET_LAYOUT_XYXY,
    DET_OUTPUT,
    INPUT_NAME,
    SEG_ARGMAX,
    SEG_LOGITS,
)
from runtime.sidecar import (
    NMS_ONNX,
    BatchRange,
    DeployThresholds,
    DetInfo,
    InputInfo,
    Int8Info,
    ModelInfo,
    PreprocessInfo,
    SegInfo,
    Sidecar,
    TensorInfo,
)
from runtime.spec import IMAGENET_MEAN, IMAGENET_STD, PAD_VALUE


@dataclass(frozen=True)
class GraphFacts:
    """What every sidecar of one export shares."""

    imgsz: tuple[int, int]
    det_rows: int  # N candidates, or K = min(max_det, N) with NMS in the graph (0: no det)
    seg_classes: dict[str, int]  # segmentation task -> class count
    batch: BatchRange
    params: int | None
    flops: float | None
    det_width: int = 6  # columns of the detection output (raw: the decoder's input width)
    input_dtype: str = "float32"  # "uint8": NHWC BGR frames, prepared in the graph


def outputs_for(spec: DeploySpec, facts: GraphFacts) -> tuple[TensorInfo, ...]:
    h, w = facts.imgsz
    outs = []
    if spec.has_det:
        width = facts.det_width if spec.det_raw else 6
        outs.append(TensorInfo(DET_OUTPUT, (-1, facts.det_rows, width), "float32"))
    if spec.has_det and spec.nms_in_graph:
        outs.append(TensorInfo(DET_COUNT, (-1,), "int32"))
    for t in spec.seg_tasks:
        outs.append(
            TensorInfo(t, (-1, h, w), "uint8")
            if spec.seg_argmax
            else TensorInfo(t, (-1, facts.seg_classes[t], h, w), "float32")
        )
    return tuple(outs)


# What a checkpoint's preprocess block lacks a key for: checkpoints without those keys predate
# them, and were all ImageNet-normalised, letterboxed RGB.
_OLD_CHECKPOINT_PREPROCESS = {
    "mean": IMAGENET_MEAN,
    "std": IMAGENET_STD,
    "letterbox": True,
    "pad_value": PAD_VALUE,
    "color": "RGB",
}


def preprocess_for(loaded: LoadedModel, imgsz: tuple[int, int]) -> PreprocessInfo:
    p = {**_OLD_CHECKPOINT_PREPROCESS, **loaded.preprocess}
    return PreprocessInfo(
        input_hw=imgsz,
        mean=tuple(float(v) for v in p["mean"]),  # type: ignore[arg-type]
        std=tuple(float(v) for v in p["std"]),  # type: ignore[arg-type]
        letterbox=bool(p["letterbox"]),
        pad_value=int(p["pad_value"]),
        color=str(p["color"]),
    )


def det_for(loaded: LoadedModel, spec: DeploySpec, facts: GraphFacts) -> DetInfo | None:
    """The detection block from the model spec's decoder and its parameters (None without a
    detection task). With the decode in the graph they are informational."""
    if not spec.has_det:
        return None
    p = spec.decoder_params
    anchors = tuple(tuple((float(a), float(b)) for a, b in lvl) for lvl in p.get("anchors", ()))
    strides = tuple(int(s) for s in p.get("strides", ()))
    return DetInfo(
        decoded_in_graph=not spec.det_raw,
        nms_in_graph=spec.nms_in_graph,
        conf_thres=spec.conf_thres,
        iou_thres=spec.iou_thres,
        max_det=facts.det_rows if spec.nms_in_graph else spec.max_det,
        anchors=anchors,
        strides=strides,
        class_names=tuple(loaded.class_names),
        layout=DET_LAYOUT_CXCYWH if spec.det_raw else DET_LAYOUT_XYXY,
        # The export's conf/iou/max_det above are the evaluation ones (and the graph's, with NMS
        # in the graph); the runtime applies these unless told otherwise.
        deploy=DeployThresholds(),
        decoder=str(spec.det_decoder),
        reg_max=int(p.get("reg_max", 0)),
        nms_kind=NMS_ONNX if spec.nms_in_graph else None,
    )


def make_sidecar(
    artifact: Path,
    precision: str,
    loaded: LoadedModel,
    spec: DeploySpec,
    facts: GraphFacts,
    int8: Int8Info | None = None,
) -> Sidecar:
    """Sidecar for an ONNX artifact already on disk at `artifact` (its hash is read from there).
    An engine's sidecar is this one plus the build facts, written by
    `runtime.tensorrt.engine_sidecar.write_engine_sidecar` (the same code as the device build script)."""
    h, w = facts.imgsz
    return Sidecar.for_artifact(
        artifact,
        input=InputInfo(INPUT_NAME, "uint8", "NHWC", shape=(-1, h, w, 3))
        if facts.input_dtype == "uint8"
        else InputInfo(INPUT_NAME, "float32", "NCHW", shape=(-1, 3, h, w)),
        batch=facts.batch,
        outputs=outputs_for(spec, facts),
        preprocess=preprocess_for(loaded, facts.imgsz),
        det=det_for(loaded, spec, facts),
        seg=SegInfo(
            spec.seg_tasks,
            SEG_ARGMAX if spec.seg_argmax else SEG_LOGITS,
            tuple(facts.seg_classes[t] for t in spec.seg_tasks),
        )
        if spec.seg_tasks
        else None,
        precision=precision,
        model=ModelInfo(loaded.model_name, facts.params, facts.flops, loaded.checkpoint_sha256),
        int8=int8,
    )
