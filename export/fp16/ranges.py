"""Which ops must stay FP32 because of the values they produce, not their type: every node whose
FP32 output, on the probe inputs, exceeds `FP16_SAFE_ABS`. A Gram matrix over thousands of
positions (TwinLiteNet's channel attention: ~1e6 at 360x640) is an ordinary MatMul and Sub, yet
overflows FP16's 65504 to inf; range-driven islands catch such ops in any model, and the FP16
agreement check afterwards still decides whether the artifact ships."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx
import onnxruntime as ort

from export.fp16.convert import float_tensors

# FP16 holds 65504; 1/8 of it leaves room for inputs outside the probes.
FP16_SAFE_ABS = 8192.0


def wide_range_outputs(
    model: onnx.ModelProto, inputs: Iterable[np.ndarray], limit: float = FP16_SAFE_ABS
) -> frozenset[str]:
    """Names of the float tensors (node outputs) whose max |value| exceeds `limit` on any of
    `inputs` (each a batch for the graph's single input)."""
    work = onnx.ModelProto()
    work.CopyFrom(model)
    floats = float_tensors(work)
    have = {o.name for o in work.graph.output}
    inits = {t.name for t in work.graph.initializer}
    names = [
        o
        for n in work.graph.node
        for o in n.output
        if o and o in floats and o not in have and o not in inits
    ]
    for name in names:
        work.graph.output.append(
            onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
        )
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(work.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feed_name = sess.get_inputs()[0].name
    out_names = [o.name for o in sess.get_outputs()]
    wide: set[str] = set()
    for batch in inputs:
        for name, value in zip(out_names, sess.run(None, {feed_name: batch})):
            if (
                np.issubdtype(np.asarray(value).dtype, np.floating)
                and np.abs(value).max(initial=0.0) > limit
            ):
                wide.add(name)
    return frozenset(wide)
