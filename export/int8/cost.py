"""Multiply-accumulate count of every Conv in an ONNX (batch 1), from shape inference: what
"share of conv FLOPs quantised" is measured in."""

from __future__ import annotations

import onnx
from onnx import shape_inference


def conv_flops(model: onnx.ModelProto) -> dict[str, float]:
    """Conv node name -> 2 * MACs at batch 1 (0 where a shape is unknown)."""
    inferred = shape_inference.infer_shapes(model)
    dims: dict[str, list[int]] = {}
    for vi in (*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input):
        shape = vi.type.tensor_type.shape
        dims[vi.name] = [d.dim_value if d.HasField("dim_value") else 0 for d in shape.dim]
    weights = {i.name: list(i.dims) for i in model.graph.initializer}
    out: dict[str, float] = {}
    for n in model.graph.node:
        if n.op_type != "Conv":
            continue
        w = weights.get(n.input[1]) if len(n.input) > 1 else None
        y = dims.get(n.output[0], [])
        if not w or len(y) < 3:
            out[n.name] = 0.0
            continue
        spatial = 1
        for d in y[2:]:
            spatial *= d
        per_out = 1
        for d in w[1:]:
            per_out *= d  # (C_in / groups) * kH * kW
        out[n.name] = 2.0 * w[0] * per_out * spatial
    return out
