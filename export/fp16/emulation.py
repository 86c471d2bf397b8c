"""An FP32 graph that behaves like the FP16 ONNX on a GPU, for measuring FP16 agreement on CPU.

ONNX Runtime's CPU provider has no FP16 kernels for most ops: it casts each FP16 node to FP32
and then drops the back-to-back Casts, so intermediate activations are never rounded to FP16 and
the FP16 ONNX looks better on CPU than it will run on a GPU (checked: a Conv -> Resize chain
keeps FP32 values). This emulation rounds what FP16 rounds: weights of FP16 nodes and every
float output of an FP16 node, to FP16's 11 significant bits (Veltkamp split: hi = c*x - (c*x -
x), c = 2^13 + 1, ops ONNX Runtime does not simplify away), and turns values beyond FP16's
range into +-inf as FP16 storage would. Accumulation stays FP32, as on tensor cores. Not
emulated: FP16 subnormals (below 6.1e-5) keep FP32 precision."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from export.fp16.convert import FIXED_INPUTS, float_tensors, half_nodes, sensitive_ops

_SPLIT = float(2**13 + 1)
_FP16_MAX = float(np.finfo(np.float16).max)


def _const(graph: onnx.GraphProto, name: str, value: float) -> str:
    graph.initializer.append(numpy_helper.from_array(np.array(value, np.float32), name))
    return name


def _round_nodes(src: str, dst: str) -> list[onnx.NodeProto]:
    """dst = src rounded to FP16 precision, +-inf beyond FP16's range."""
    t = f"{dst}__r16"
    return [
        helper.make_node("Mul", [src, "__r16_split"], [f"{t}_g"]),
        helper.make_node("Sub", [f"{t}_g", src], [f"{t}_d"]),
        helper.make_node("Sub", [f"{t}_g", f"{t}_d"], [f"{t}_hi"]),
        helper.make_node("Abs", [src], [f"{t}_abs"]),
        helper.make_node("Greater", [f"{t}_abs", "__r16_max"], [f"{t}_over"]),
        helper.make_node("Mul", [src, "__r16_inf"], [f"{t}_inf"]),
        helper.make_node("Where", [f"{t}_over", f"{t}_inf", f"{t}_hi"], [dst]),
    ]


def emulate_fp16(
    model: onnx.ModelProto, keep_resize_fp32: bool = False, wide: frozenset[str] = frozenset()
) -> onnx.ModelProto:
    work = onnx.ModelProto()
    work.CopyFrom(model)
    g = work.graph
    floats = float_tensors(work)
    half = half_nodes(g, sensitive_ops(keep_resize_fp32), wide)
    inits = {t.name: t for t in g.initializer}
    _const(g, "__r16_split", _SPLIT)
    _const(g, "__r16_max", _FP16_MAX)
    _const(g, "__r16_inf", float("inf"))
    graph_inputs = {i.name for i in g.input}
    nodes: list[onnx.NodeProto] = []
    rounded: dict[str, str] = {}
    for i, node in enumerate(list(g.node)):
        post: list[onnx.NodeProto] = []
        if i in half:
            for k, name in enumerate(node.input):
                if name not in floats or k in FIXED_INPUTS.get(node.op_type, ()):
                    continue
                if name not in rounded and name in inits:
                    with np.errstate(over="ignore"):  # beyond FP16 becomes inf, as on the GPU
                        arr = numpy_helper.to_array(inits[name]).astype(np.float16)
                    arr = arr.astype(np.float32)
                    g.initializer.append(numpy_helper.from_array(arr, f"{name}__w16"))
                    rounded[name] = f"{name}__w16"
                elif name not in rounded and name in graph_inputs:
                    rounded[name] = f"{name}__in16"
                    nodes += _round_nodes(name, rounded[name])
                node.input[k] = rounded.get(name, name)
            for k, out in enumerate(node.output):
                if out in floats:
                    node.output[k] = f"{out}__pre16"
                    post += _round_nodes(node.output[k], out)
        nodes.append(node)
        nodes += post
    del g.node[:]
    g.node.extend(nodes)
    del g.value_info[:]
    onnx.checker.check_model(work)
    return work
