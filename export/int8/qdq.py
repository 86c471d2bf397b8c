"""Explicit quantisation: QuantizeLinear / DequantizeLinear pairs where TensorRT fuses them.

TensorRT's rules for a CNN (its "Explicit Quantization" guide; NVIDIA ModelOpt's ONNX PTQ
places them the same way for convolutions): a Q/DQ pair on a Conv's **activation input**
(per-tensor scale, int8, zero point 0) and a DQ on its **weights** (int8 initializer, one scale
per output channel, axis 0); the bias stays float and the Conv's output is float. TensorRT then
runs the Conv in INT8, fuses bias and activation into it, and when the next consumer starts with
a Q it fuses that too, so the tensor between two quantised convs stays int8 in memory.

One Q/DQ pair per quantised tensor is shared by every quantised consumer of it. Layers left out
(`exclude`: the guard's FP16 fallback, or a user's list) keep float inputs and weights: on the
engine they run in FP16.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

QMAX = 127.0
# Op types whose inputs can be quantised here: input 0 = activation, input 1 = weights (OIHW).
QUANTIZABLE_OPS: tuple[str, ...] = ("Conv",)


@dataclass(frozen=True)
class QuantLayer:
    """One quantisable node: its name, its activation input and weight initializer."""

    node: str
    op: str
    activation: str
    weight: str


def quantizable_layers(
    model: onnx.ModelProto, ops: Iterable[str] = QUANTIZABLE_OPS
) -> list[QuantLayer]:
    """Nodes of `ops` whose weights are a float initializer (so they can be stored as int8), in
    graph order."""
    inits = {i.name: i for i in model.graph.initializer}
    ops = tuple(ops)
    out = []
    for n in model.graph.node:
        if n.op_type not in ops or len(n.input) < 2:
            continue
        w = inits.get(n.input[1])
        if w is None or w.data_type != TensorProto.FLOAT or len(w.dims) < 2:
            continue
        out.append(QuantLayer(n.name, n.op_type, n.input[0], n.input[1]))
    return out


def activation_scale(amax: float) -> float:
    """Symmetric int8 scale of a tensor whose values lie in [-amax, amax] (a dead tensor gets a
    scale that maps its zeros to zero)."""
    return float(amax) / QMAX if amax > 0 else 1.0 / QMAX


def quantize_weights(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-output-channel symmetric int8: (int8 weights, float32 scale per channel)."""
    flat = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
    scale = np.where(flat > 0, flat / QMAX, 1.0).astype(np.float32)
    shape = (-1,) + (1,) * (w.ndim - 1)
    q = np.clip(np.rint(w / scale.reshape(shape)), -QMAX, QMAX).astype(np.int8)
    return q, scale


def insert_qdq(
    model: onnx.ModelProto,
    amax: Mapping[str, float],
    exclude: Iterable[str] = (),
    ops: Iterable[str] = QUANTIZABLE_OPS,
) -> tuple[onnx.ModelProto, list[QuantLayer]]:
    """A copy of `model` with every quantisable layer of `ops` quantised except those named in
    `exclude`; returns it and the layers it quantised. `amax` holds each activation's range."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    skip = set(exclude)
    layers = [q for q in quantizable_layers(out, ops) if q.node not in skip]
    missing = sorted({q.activation for q in layers} - set(amax))
    if missing:
        raise KeyError(f"no calibrated range for activation(s) {missing[:3]}")
    inits = {i.name: i for i in g.initializer}
    by_name = {n.name: n for n in g.node}
    new_nodes: dict[str, list[onnx.NodeProto]] = {}  # node name -> Q/DQ nodes to put before it
    dq_of: dict[str, str] = {}  # activation -> its dequantised name
    w_users = _weight_users(g)
    for q in layers:
        node = by_name[q.node]
        pre = new_nodes.setdefault(q.node, [])
        if q.activation not in dq_of:
            dq_of[q.activation] = _add_activation_qdq(g, q.activation, amax[q.activation], pre)
        node.input[0] = dq_of[q.activation]
        node.input[1] = _add_weight_dq(
            g, inits[q.weight], q.node, pre, shared=w_users[q.weight] > 1
        )
    _place(g, new_nodes)
    _drop_unused_initializers(g)
    return out, layers


def _weight_users(g: onnx.GraphProto) -> dict[str, int]:
    count: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            count[i] = count.get(i, 0) + 1
    return count


def _add_activation_qdq(g: onnx.GraphProto, x: str, amax: float, pre: list) -> str:
    base = _safe(x)
    scale, zp = f"{base}_act_scale", f"{base}_act_zp"
    g.initializer.append(
        numpy_helper.from_array(np.array(activation_scale(amax), np.float32), scale)
    )
    g.initializer.append(numpy_helper.from_array(np.array(0, np.int8), zp))
    qx, dqx = f"{base}_q", f"{base}_dq"
    pre.append(helper.make_node("QuantizeLinear", [x, scale, zp], [qx], name=f"{base}_Quantize"))
    pre.append(
        helper.make_node("DequantizeLinear", [qx, scale, zp], [dqx], name=f"{base}_Dequantize")
    )
    return dqx


def _add_weight_dq(
    g: onnx.GraphProto, w: onnx.TensorProto, node: str, pre: list, shared: bool
) -> str:
    base = _safe(f"{node}_{w.name}" if shared else w.name)
    qw, scale = quantize_weights(numpy_helper.to_array(w).astype(np.float32))
    g.initializer.append(numpy_helper.from_array(qw, f"{base}_int8"))
    g.initializer.append(numpy_helper.from_array(scale, f"{base}_w_scale"))
    g.initializer.append(numpy_helper.from_array(np.zeros(len(scale), np.int8), f"{base}_w_zp"))
    out = f"{base}_wdq"
    pre.append(
        helper.make_node(
            "DequantizeLinear",
            [f"{base}_int8", f"{base}_w_scale", f"{base}_w_zp"],
            [out],
            name=f"{base}_WeightDequantize",
            axis=0,
        )
    )
    return out


def _place(g: onnx.GraphProto, new_nodes: dict[str, list[onnx.NodeProto]]) -> None:
    """Insert each node's Q/DQ right before it, so the graph stays topologically sorted (an
    activation's shared pair goes before its first quantised consumer)."""
    nodes = list(g.node)
    del g.node[:]
    for n in nodes:
        g.node.extend(new_nodes.get(n.name, ()))
        g.node.append(n)


def _drop_unused_initializers(g: onnx.GraphProto) -> None:
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    keep = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)


def _safe(name: str) -> str:
    return name.strip("/").replace("/", "_").replace(":", "_") or "t"


__all__ = ["QUANTIZABLE_OPS", "QuantLayer", "insert_qdq", "quantizable_layers", "quantize_weights"]
