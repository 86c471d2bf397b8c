"""Per-operator restrictions of the onnx-tensorrt parser that a static look at the graph can
check (attribute values, inputs that must be constants). Each rule returns reasons, empty when
the node is fine. Only restrictions named in the op tables are checked."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from runtime.tensorrt.targets import get_target

_RESIZE_MODES = {"nearest", "linear"}
_RESIZE_COORDS = {
    "half_pixel",
    "pytorch_half_pixel",
    "tf_half_pixel_for_nn",
    "asymmetric",
    "align_corners",
}
_RESIZE_NEAREST = {"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"}
TOPK_MAX_K = 3840


class GraphConstants:
    """Values of initializers and Constant-node outputs, by tensor name."""

    def __init__(self, graph: onnx.GraphProto):
        self.values: dict[str, np.ndarray] = {
            t.name: numpy_helper.to_array(t) for t in graph.initializer
        }
        for node in graph.node:
            if node.op_type == "Constant":
                for a in node.attribute:
                    if a.name == "value":
                        self.values[node.output[0]] = numpy_helper.to_array(a.t)

    def get(self, name: str) -> np.ndarray | None:
        return self.values.get(name)


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _text(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _resize(node: onnx.NodeProto, consts: GraphConstants, target: str) -> list[str]:
    a = _attrs(node)
    mode = _text(a.get("mode", "nearest"))
    coord = _text(a.get("coordinate_transformation_mode", "half_pixel"))
    nearest = _text(a.get("nearest_mode", "round_prefer_floor"))
    out = []
    if mode not in _RESIZE_MODES:
        out.append(f"mode {mode!r} unsupported (TensorRT: nearest, linear)")
    if coord not in _RESIZE_COORDS:
        out.append(f"coordinate_transformation_mode {coord!r} unsupported")
    if mode == "nearest" and nearest not in _RESIZE_NEAREST:
        out.append(f"nearest_mode {nearest!r} unsupported")
    if a.get("antialias", 0):
        out.append("antialias is not supported")
    return out


def _topk(node: onnx.NodeProto, consts: GraphConstants, target: str) -> list[str]:
    out = []
    if not _attrs(node).get("sorted", 1):
        out.append("sorted=0 is unsupported (must be 1)")
    k = consts.get(node.input[1]) if len(node.input) > 1 else None
    if k is None:
        out.append("K is not a constant; TensorRT needs a build-time K")
    elif int(np.asarray(k).reshape(-1)[0]) >= TOPK_MAX_K:
        out.append(f"K={int(np.asarray(k).reshape(-1)[0])} is not below {TOPK_MAX_K}")
    return out


def _pool(node: onnx.NodeProto, consts: GraphConstants, target: str) -> list[str]:
    a = _attrs(node)
    out = []
    if len(a.get("kernel_shape", [])) not in (2, 3):
        out.append("only 2D or 3D pooling is supported")
    if any(d != 1 for d in a.get("dilations", [])):
        out.append("dilations must be empty or all ones")
    if node.op_type == "MaxPool" and len(node.output) > 1 and node.output[1]:
        out.append("the Indices output is unsupported")
    return out


def _scatter_nd(node: onnx.NodeProto, consts: GraphConstants, target: str) -> list[str]:
    red = _text(_attrs(node).get("reduction", "none"))
    return [] if red == "none" else [f"reduction {red!r} is unsupported (must be none)"]


def _const_axes(node: onnx.NodeProto, consts: GraphConstants, target: str) -> list[str]:
    if not get_target(target).const_axes or len(node.input) < 2 or not node.input[1]:
        return []
    if consts.get(node.input[1]) is None:
        return ["axes input is not a constant (dynamic axes need TensorRT >= 10.7)"]
    return []


def _nms(node: onnx.NodeProto, consts: GraphConstants, target: str) -> list[str]:
    names = ("max_output_boxes_per_class", "iou_threshold", "score_threshold")
    return [
        f"{n} is not a constant"
        for n, x in zip(names, node.input[2:5])
        if x and consts.get(x) is None
    ]


RULES: dict[str, Callable[[onnx.NodeProto, GraphConstants, str], list[str]]] = {
    "Resize": _resize,
    "TopK": _topk,
    "MaxPool": _pool,
    "AveragePool": _pool,
    "ScatterND": _scatter_nd,
    "Squeeze": _const_axes,
    "Unsqueeze": _const_axes,
    "NonMaxSuppression": _nms,
}
