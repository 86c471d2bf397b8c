"""Hop 2: FP16 ONNX with FP32 graph I/O and FP32 islands, for TensorRT 11's strongly typed
networks (where the ONNX itself must carry the precision) and for FP16 runs in ONNX Runtime.

Our own converter rather than onnxconverter-common's `convert_float_to_float16`: that one turns
Resize's `scales` into float16, which ONNX forbids (ORT rejects the graph), and it has no notion
of "everything after the sigmoid". Rules here:
- FP32 region = every node from a sensitive op (Sigmoid, Softmax, ArgMax, TopK, NMS, ...)
  onwards, so the box decode (pixel coordinates up to 640 need more than FP16's 11 bits),
  scores, NMS and the final argmax stay FP32. Resize can be added (`keep_resize_fp32`).
- Only ops on a whitelist run in FP16; anything else stays FP32 (unknown means safe).
- Inputs that ONNX types separately (Resize roi/scales) are left alone.
- Graph inputs and outputs keep their types; Casts are inserted at every boundary.
- A float32 weight beyond FP16's range is an error, not a silent clamp."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from export.errors import Fp16Error

SENSITIVE_OPS = frozenset(
    {
        "Sigmoid",
        "Softmax",
        "LogSoftmax",
        "ArgMax",
        "ArgMin",
        "TopK",
        "NonMaxSuppression",
        "ReduceSum",
        "ReduceMean",
        "Exp",
        "Log",
    }
)
FP16_OPS = frozenset(
    {
        "Conv",
        "ConvTranspose",
        "BatchNormalization",
        "HardSwish",
        "HardSigmoid",
        "Relu",
        "LeakyRelu",
        "Sigmoid",
        "Tanh",
        "Mul",
        "Add",
        "Sub",
        "Div",
        "Pow",
        "Concat",
        "Slice",
        "Reshape",
        "Transpose",
        "Flatten",
        "Squeeze",
        "Unsqueeze",
        "Split",
        "MaxPool",
        "AveragePool",
        "GlobalAveragePool",
        "Resize",
        "Identity",
        "Clip",
        "Pad",
        "Expand",
        "Gather",
        "Neg",
        "Abs",
        "Max",
        "Min",
        "Where",
    }
)
# Inputs ONNX types independently of the data input; they keep their own type.
FIXED_INPUTS = {"Resize": {1, 2}, "Where": {0}}
_FP16_MAX = float(np.finfo(np.float16).max)


@dataclass(frozen=True)
class Fp16Info:
    fp16_nodes: int
    fp32_nodes: int
    casts_added: int
    fp32_ops: tuple[str, ...]
    kept_fp32_for_range: tuple[str, ...] = ()  # tensors beyond FP16's safe range on the probes


def _consumers(graph: onnx.GraphProto) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for i, node in enumerate(graph.node):
        for name in node.input:
            out.setdefault(name, []).append(i)
    return out


def fp32_region(graph: onnx.GraphProto, sensitive: frozenset[str]) -> set[int]:
    """Indices of nodes at or after a sensitive op (forward closure)."""
    cons = _consumers(graph)
    todo = [i for i, n in enumerate(graph.node) if n.op_type in sensitive]
    seen: set[int] = set()
    while todo:
        i = todo.pop()
        if i in seen:
            continue
        seen.add(i)
        for name in graph.node[i].output:
            todo.extend(cons.get(name, []))
    return seen


def float_tensors(model: onnx.ModelProto) -> set[str]:
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    g = inferred.graph
    vis = list(g.value_info) + list(g.input) + list(g.output)
    names = {v.name for v in vis if v.type.tensor_type.elem_type == TensorProto.FLOAT}
    return names | {t.name for t in g.initializer if t.data_type == TensorProto.FLOAT}


def half_nodes(
    graph: onnx.GraphProto, sensitive: frozenset[str], wide: frozenset[str] = frozenset()
) -> set[int]:
    """Indices of the nodes that run in FP16: whitelisted ops outside the FP32 region whose
    outputs are not among the `wide` tensors (values beyond FP16's safe range)."""
    keep = fp32_region(graph, sensitive)
    return {
        i
        for i, n in enumerate(graph.node)
        if i not in keep and n.op_type in FP16_OPS and not set(n.output) & wide
    }


def sensitive_ops(keep_resize_fp32: bool) -> frozenset[str]:
    return SENSITIVE_OPS | (frozenset({"Resize"}) if keep_resize_fp32 else frozenset())


class _Converter:
    def __init__(self, model: onnx.ModelProto, sensitive: frozenset[str], wide: frozenset[str]):
        self.model = model
        self.graph = model.graph
        self.floats = float_tensors(model)
        self.half = half_nodes(self.graph, sensitive, wide)
        self.inits = {t.name: t for t in self.graph.initializer}
        self.fp16_names: set[str] = set()  # tensors that now hold float16
        self.cast_cache: dict[tuple[str, int], str] = {}
        self.new_nodes: list[onnx.NodeProto] = []
        self.casts = 0

    def _cast(self, name: str, to: int) -> str:
        key = (name, to)
        if key not in self.cast_cache:
            out = f"{name}__to_{'fp16' if to == TensorProto.FLOAT16 else 'fp32'}"
            self.new_nodes.append(
                helper.make_node("Cast", [name], [out], to=to, name=f"{out}_cast")
            )
            self.cast_cache[key] = out
            self.casts += 1
        return self.cast_cache[key]

    def _half_init(self, name: str) -> str:
        new = f"{name}__fp16"
        if new not in self.inits:
            arr = numpy_helper.to_array(self.inits[name])
            big = float(np.abs(arr).max(initial=0.0))
            if big > _FP16_MAX:
                raise Fp16Error(
                    f"weight {name!r} holds {big:.4g}, beyond float16's {_FP16_MAX:.0f}; keep "
                    "its op in FP32 or export without --fp16-onnx"
                )
            self.inits[new] = numpy_helper.from_array(arr.astype(np.float16), new)
            self.graph.initializer.append(self.inits[new])
        return new

    def _input_for_half(self, node: onnx.NodeProto, k: int, name: str) -> str:
        if not name or name not in self.floats or k in FIXED_INPUTS.get(node.op_type, ()):
            return name
        if name in self.fp16_names:
            return name
        return (
            self._half_init(name) if name in self.inits else self._cast(name, TensorProto.FLOAT16)
        )

    def run(self) -> Fp16Info:
        original = list(self.graph.node)
        kept = sorted({n.op_type for i, n in enumerate(original) if i not in self.half})
        for i, node in enumerate(original):
            if i in self.half:
                for k, name in enumerate(node.input):
                    node.input[k] = self._input_for_half(node, k, name)
                self.fp16_names.update(o for o in node.output if o in self.floats)
            else:
                for k, name in enumerate(node.input):
                    if name in self.fp16_names:
                        node.input[k] = self._cast(name, TensorProto.FLOAT)
            self.new_nodes.append(node)
        self._restore_outputs()
        self._finish()
        fp32 = len(original) - len(self.half)
        return Fp16Info(len(self.half), fp32, self.casts, tuple(kept))

    def _restore_outputs(self) -> None:
        """Graph outputs keep float32: rename the FP16 producer, cast back under the name."""
        for out in self.graph.output:
            if out.name not in self.fp16_names:
                continue
            inner = f"{out.name}__fp16"
            for node in self.new_nodes:
                node.output[:] = [inner if o == out.name else o for o in node.output]
                node.input[:] = [inner if x == out.name else x for x in node.input]
            self.new_nodes.append(
                helper.make_node(
                    "Cast", [inner], [out.name], to=TensorProto.FLOAT, name=f"{out.name}_to_fp32"
                )
            )
            self.casts += 1

    def _finish(self) -> None:
        used = {x for n in self.new_nodes for x in n.input}
        keep_inits = [t for t in self.graph.initializer if t.name in used]
        nodes = list(self.new_nodes)
        del self.graph.node[:]
        self.graph.node.extend(_topological(nodes, self.graph))
        del self.graph.initializer[:]
        self.graph.initializer.extend(keep_inits)
        del self.graph.value_info[:]


def _topological(nodes: list[onnx.NodeProto], graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """Casts were appended after their consumers; ONNX wants producers first."""
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, out = list(nodes), []
    while pending:
        rest = [n for n in pending if not all(x in ready for x in n.input)]
        done = [n for n in pending if all(x in ready for x in n.input)]
        if not done:
            raise Fp16Error("FP16 conversion produced a cycle; report the model")
        for n in done:
            out.append(n)
            ready.update(n.output)
        pending = rest
    return out


def convert_to_fp16(
    model: onnx.ModelProto,
    keep_resize_fp32: bool = False,
    wide: frozenset[str] = frozenset(),
) -> tuple[onnx.ModelProto, Fp16Info]:
    """`wide`: tensors whose producers stay FP32 (see `export.fp16.ranges.wide_range_outputs`)."""
    work = onnx.ModelProto()
    work.CopyFrom(model)
    info = _Converter(work, sensitive_ops(keep_resize_fp32), wide).run()
    work = onnx.shape_inference.infer_shapes(work, strict_mode=True)
    try:
        onnx.checker.check_model(work, full_check=True)
    except Exception as e:
        raise Fp16Error(f"FP16 ONNX fails onnx.checker: {str(e)[:300]}") from None
    return work, info


class Fp16OnnxFromOnnx:
    """Lazy: calling converts `onnx_loader()`; `info` is filled after the call."""

    def __init__(
        self,
        onnx_loader: Callable[[], onnx.ModelProto],
        keep_resize_fp32: bool = False,
        wide: frozenset[str] = frozenset(),
    ):
        self.onnx_loader, self.keep_resize_fp32 = onnx_loader, keep_resize_fp32
        self.wide = wide
        self.info: Fp16Info | None = None

    def __call__(self) -> onnx.ModelProto:
        return self.with_info()[0]

    def with_info(self) -> tuple[onnx.ModelProto, Fp16Info]:
        model, self.info = convert_to_fp16(self.onnx_loader(), self.keep_resize_fp32, self.wide)
        return model, self.info
