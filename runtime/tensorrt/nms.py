"""NMS appended to the engine's network (`--trt-nms`, `NmsSpec`).

From an ONNX *without* NMS (det rows [B, N, 6] x1 y1 x2 y2 score class), the builder appends NMS to
the parsed network and gives it the outputs the runtime reads for `nms_in_graph`: `det` [B, K, 6]
best first and `det_count` [B] int32 (K = min(max_det, N)). "efficient" = the EfficientNMS_TRT
plugin (IPluginV2, deprecated from 10.12); "inms" = the native INMSLayer (`network.add_nms`, which
returns indices: a scatter, a top-k and a gather turn them into rows). Class-aware either way:
scores go in one-hot per class. Which kinds a TensorRT target has is the target table's `trt_nms`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runtime.io_names import DET_COUNT, DET_OUTPUT
from runtime.tensorrt.errors import EngineBuildError
from runtime.tensorrt.targets import (
    NMS_AUTO,
    NMS_EFFICIENT,
    NMS_INMS,
    NMS_NONE,
    TRT_NMS_CHOICES,
    TRT_NMS_KINDS,
    parse_version,
    target_for_version,
)

EFFICIENT_NMS_DEPRECATED_FROM = (10, 12)  # TensorRT 10.12 release notes: EfficientNMS_TRT v1
INMS_TOPK_MAX = 5000  # INMSLayer's TopK box limit cap (2000 on SM 5.3 / 6.2, no Orin)
TOPK_K_MAX = 3840  # ITopKLayer's largest K


@dataclass(frozen=True)
class NmsSpec:
    """NMS appended to the network: the kind and what is baked in. The runtime can only
    tighten conf / max_det afterwards, so these are the deploy thresholds by default."""

    kind: str  # NMS_EFFICIENT | NMS_INMS
    conf_thres: float
    iou_thres: float
    max_det: int
    topk: int  # candidates per image into NMS (INMSLayer's TopK box limit; EfficientNMS: 4096)
    num_classes: int

    def flag(self) -> str:
        return (
            f"nms={self.kind}(conf={self.conf_thres:g},iou={self.iou_thres:g},"
            f"max_det={self.max_det},topk={self.topk})"
        )


def supported_nms(trt: Any) -> tuple[tuple[str, ...], str]:
    """(NMS kinds, where) for the installed TensorRT, from its target's `trt_nms`; a version
    outside the table tries what is asked (TensorRT itself then says no)."""
    target = target_for_version(str(trt.__version__))
    if target is None:
        return TRT_NMS_KINDS, f"TensorRT {trt.__version__}"
    return target.trt_nms, f"TensorRT target {target.name} (installed {trt.__version__})"


def resolve_nms_kind(trt: Any, asked: str | None) -> str | None:
    """`--trt-nms` -> the kind to append (None: no NMS in the engine). `auto` = the target's
    first kind, or INMSLayer from 10.12 on (where EfficientNMS_TRT is deprecated)."""
    if asked in (None, NMS_NONE):
        return None
    if asked not in TRT_NMS_CHOICES:
        raise EngineBuildError(f"--trt-nms {asked!r} is not one of {', '.join(TRT_NMS_CHOICES)}")
    kinds, where = supported_nms(trt)
    if asked == NMS_AUTO:
        if not kinds:
            raise EngineBuildError(f"--trt-nms auto: {where} has no in-engine NMS; use none")
        version = parse_version(str(trt.__version__))
        late = version is not None and version >= EFFICIENT_NMS_DEPRECATED_FROM
        return NMS_INMS if late and NMS_INMS in kinds else kinds[0]
    if asked not in kinds:
        alt = f"--trt-nms {kinds[0]} or none" if kinds else "--trt-nms none"
        raise EngineBuildError(
            f"--trt-nms {asked}: {where} supports {', '.join(kinds) or 'no in-engine NMS'}; "
            f"use {alt}"
        )
    return asked


def nms_spec_from_sidecar(
    side: dict[str, Any], kind: str, overrides: dict[str, Any] | None = None
) -> NmsSpec:
    """What to bake in: the source ONNX sidecar's deploy thresholds (what mtc-run applies),
    unless `overrides` (conf_thres / iou_thres / max_det / topk) say otherwise. The ONNX must
    give decoded rows x1 y1 x2 y2 score class without NMS."""
    det = side.get("det")
    if not isinstance(det, dict):
        raise EngineBuildError(
            "--trt-nms: the ONNX has no detection output (sidecar 'det' is null)"
        )
    if det.get("nms_in_graph"):
        raise EngineBuildError(
            "--trt-nms: this ONNX already has NMS in its graph (det + det_count); build from the "
            "export made without --nms-in-graph"
        )
    if not det.get("decoded_in_graph", True) or det.get("layout") != "xyxy_score_class":
        raise EngineBuildError(
            f"--trt-nms needs decoded rows (det.layout 'xyxy_score_class'), the sidecar says "
            f"{det.get('layout')!r}{'' if det.get('decoded_in_graph', True) else ', raw output'}"
        )
    dep = {"conf_thres": 0.25, "iou_thres": 0.45, "max_det": 100, "topk": 1000}
    dep.update(det.get("deploy") or {})
    dep.update({k: v for k, v in (overrides or {}).items() if v is not None})
    spec = NmsSpec(
        kind,
        float(dep["conf_thres"]),
        float(dep["iou_thres"]),
        int(dep["max_det"]),
        int(dep["topk"]),
        len(det.get("class_names") or ()) or 1,
    )
    if not (0 < spec.conf_thres <= 1 and 0 < spec.iou_thres <= 1):
        raise EngineBuildError(
            f"--nms-conf and --nms-iou must be in (0, 1], got {spec.conf_thres}, {spec.iou_thres}"
        )
    if spec.max_det < 1 or spec.topk < 1:
        raise EngineBuildError(f"--nms-max-det and --nms-topk must be >= 1, got {spec.max_det}")
    return spec


# -- the network tail -------------------------------------------------------------------------
class _Net:
    """The few network calls the NMS tail makes, with constants kept alive until the build
    (TensorRT reads Weights memory at build time, not when the layer is added)."""

    def __init__(self, trt: Any, network: Any) -> None:
        import numpy as np  # TensorRT's Python API takes numpy arrays as Weights

        self.trt, self.net, self.np = trt, network, np
        self.keep: list[Any] = []

    def const(self, value: Any, dtype: str) -> Any:
        arr = self.np.array(value, dtype=dtype, order="C")  # 0-d stays 0-d (scalar inputs)
        self.keep.append(arr)
        return self.net.add_constant(arr.shape, arr).get_output(0)

    def gather(self, data: Any, idx: Any, axis: int, elementwise_dims: int = 0) -> Any:
        layer = self.net.add_gather(data, idx, axis)
        layer.num_elementwise_dims = elementwise_dims
        return layer.get_output(0)

    def columns(self, det: Any, cols: list[int]) -> Any:
        return self.gather(det, self.const(cols, "int32"), 2)

    def op(self, a: Any, b: Any, name: str) -> Any:
        return self.net.add_elementwise(
            a, b, getattr(self.trt.ElementWiseOperation, name)
        ).get_output(0)

    def cast(self, x: Any, dtype: str) -> Any:
        return self.net.add_cast(x, getattr(self.trt.DataType, dtype)).get_output(0)

    def reshape(self, x: Any, dims: tuple[int, ...]) -> Any:
        layer = self.net.add_shuffle(x)
        layer.reshape_dims = dims  # 0 copies the input's dimension (the dynamic batch)
        return layer.get_output(0)


def append_nms(trt: Any, network: Any, spec: NmsSpec) -> tuple[int, list[Any]]:
    """Replace the network output `det` [B, N, 6] with `det` [B, K, 6] best first + `det_count`
    [B] int32 after `spec.kind` NMS; returns K and the constants' arrays (keep them alive
    until the network is built)."""
    outs = {network.get_output(i).name: network.get_output(i) for i in range(network.num_outputs)}
    det = outs.get(DET_OUTPUT)
    if det is None or DET_COUNT in outs:
        raise EngineBuildError(
            f"--trt-nms needs an ONNX output {DET_OUTPUT!r} and none called {DET_COUNT!r}; "
            f"the network's outputs are {sorted(outs)}"
        )
    shape = tuple(det.shape)
    if len(shape) != 3 or shape[1] < 1 or shape[2] != 6:
        raise EngineBuildError(f"--trt-nms needs {DET_OUTPUT} as [B, N, 6], the ONNX has {shape}")
    n = int(shape[1])
    k = min(spec.max_det, n, TOPK_K_MAX)
    g = _Net(trt, network)
    boxes, score = g.columns(det, [0, 1, 2, 3]), g.columns(det, [4])  # [B,N,4], [B,N,1]
    scores = score
    if spec.num_classes > 1:  # one-hot per class: a box competes only inside its own class
        classes = g.const([[list(range(spec.num_classes))]], "float32")
        onehot = g.cast(g.op(g.columns(det, [5]), classes, "EQUAL"), "FLOAT")
        scores = g.op(onehot, score, "PROD")  # [B,N,C]
    if spec.kind == NMS_EFFICIENT:
        rows, count = _efficient_nms(g, boxes, scores, spec, k)
    else:
        rows, count = _inms(g, det, boxes, scores, score, spec, k)
    network.unmark_output(det)
    det.name = "det_candidates"
    rows.name, count.name = DET_OUTPUT, DET_COUNT
    network.mark_output(rows)
    network.mark_output(count)
    return k, g.keep


def _efficient_nms(g: _Net, boxes: Any, scores: Any, spec: NmsSpec, k: int) -> tuple[Any, Any]:
    """EfficientNMS_TRT v1 (IPluginV2DynamicExt): num_detections [B,1] int32, detection_boxes
    [B,K,4], detection_scores [B,K], detection_classes [B,K] int32, best first."""
    trt, np = g.trt, g.np
    trt.init_libnvinfer_plugins(trt.Logger(trt.Logger.WARNING), "")
    registry = trt.get_plugin_registry()
    find = getattr(registry, "get_creator", None) or registry.get_plugin_creator
    creator = find("EfficientNMS_TRT", "1", "")
    if creator is None:
        raise EngineBuildError(
            f"TensorRT {trt.__version__} has no EfficientNMS_TRT plugin (libnvinfer_plugin not "
            "installed?); use --trt-nms inms"
        )
    f32, i32 = trt.PluginFieldType.FLOAT32, trt.PluginFieldType.INT32
    fields = [
        ("score_threshold", spec.conf_thres, np.float32, f32),
        ("iou_threshold", spec.iou_thres, np.float32, f32),
        ("max_output_boxes", k, np.int32, i32),
        ("background_class", -1, np.int32, i32),
        ("score_activation", 0, np.int32, i32),
        ("class_agnostic", 0, np.int32, i32),
        ("box_coding", 0, np.int32, i32),  # BoxCorner: x1 y1 x2 y2
    ]
    arrays = [np.array([v], dtype=dt) for _, v, dt, _ in fields]
    g.keep += arrays
    collection = trt.PluginFieldCollection(
        [trt.PluginField(name, a, ft) for (name, _, _, ft), a in zip(fields, arrays)]
    )
    plugin = creator.create_plugin("mtc_efficient_nms", collection)
    if plugin is None:
        raise EngineBuildError(f"TensorRT {trt.__version__} refused the EfficientNMS_TRT fields")
    layer = g.net.add_plugin_v2([boxes, scores], plugin)
    num, out_boxes, out_scores, out_classes = (layer.get_output(i) for i in range(4))
    cls = g.reshape(g.cast(out_classes, "FLOAT"), (0, 0, 1))
    concat = g.net.add_concatenation([out_boxes, g.reshape(out_scores, (0, 0, 1)), cls])
    concat.axis = 2
    return concat.get_output(0), g.reshape(num, (-1,))


def _inms(
    g: _Net, det: Any, boxes: Any, scores: Any, score: Any, spec: NmsSpec, k: int
) -> tuple[Any, Any]:
    """INMSLayer: SelectedIndices [M, 3] (batch, class, box) int32 (M depends on the data) and
    NumOutputBoxes. Fixed-K rows as export/deploy_nms.py does it: the kept boxes' scores
    scattered into zeros [B, N], top-K of those, the rows gathered, zero rows after the count."""
    trt = g.trt
    layer = g.net.add_nms(boxes, scores, g.const(k, "int32"))
    layer.bounding_box_format = trt.BoundingBoxFormat.CORNER_PAIRS
    layer.topk_box_limit = min(spec.topk, int(tuple(det.shape)[1]), INMS_TOPK_MAX)
    layer.set_input(3, g.const(spec.iou_thres, "float32"))
    layer.set_input(4, g.const(spec.conf_thres, "float32"))
    where = g.gather(layer.get_output(0), g.const([0, 2], "int32"), 1)  # [M, 2] (batch, box)
    score2 = g.reshape(score, (0, 0))  # [B, N]
    kept = g.net.add_gather_v2(score2, where, trt.GatherMode.ND).get_output(0)  # [M]
    zeros = g.op(score2, g.const([[0.0]], "float32"), "PROD")
    kept_scores = g.net.add_scatter(zeros, where, kept, trt.ScatterMode.ND).get_output(0)
    top = g.net.add_topk(kept_scores, trt.TopKOperation.MAX, k, 1 << 1)
    values, order = top.get_output(0), top.get_output(1)  # [B, K]
    rows = g.gather(det, order, 1, elementwise_dims=1)  # [B, K, 6]
    valid = g.cast(g.op(values, g.const([[0.0]], "float32"), "GREATER"), "FLOAT")
    rows = g.op(rows, g.reshape(valid, (0, 0, 1)), "PROD")
    total = g.net.add_reduce(valid, trt.ReduceOperation.SUM, 1 << 1, False).get_output(0)
    return rows, g.cast(total, "INT32")
