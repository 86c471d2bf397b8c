"""`mtc-export --input uint8`: the graph takes the letterboxed frames as they are and prepares them
itself.

The input becomes uint8 [B, H, W, 3] in OpenCV's BGR order (what the runtime's letterbox writes),
and five nodes in front of the float graph do what `runtime.preprocess.Preprocessor` does on the
host: Cast -> Gather (channel order, only for RGB networks) -> Transpose to NCHW -> Mul by
scale / std -> Add -mean / std, in float32, with the same constants, so the float graph sees the
same numbers. On a GPU the host-to-device copy is then 4x smaller and the device does the
arithmetic; on the host only the letterbox is left.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from export.errors import ExportError
from runtime.preprocess import CHANNEL_SOURCES, Preprocessor
from runtime.sidecar import PreprocessInfo

_FLOAT_INPUT = "mtc_images_float"


def with_uint8_input(model: onnx.ModelProto, info: PreprocessInfo) -> onnx.ModelProto:
    """A copy of `model` (one float32 NCHW input) whose input is uint8 NHWC BGR."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    if len(g.input) != 1:
        raise ExportError(f"--input uint8 needs a single-input graph, got {len(g.input)} inputs")
    old = g.input[0]
    name = old.name
    if old.type.tensor_type.elem_type != TensorProto.FLOAT:
        raise ExportError(f"--input uint8 wraps a float32 input; {name!r} is not float32")
    dims = old.type.tensor_type.shape.dim
    batch = dims[0].dim_param or dims[0].dim_value
    h, w = info.input_hw
    for node in g.node:
        node.input[:] = [_FLOAT_INPUT if i == name else i for i in node.input]
    std = np.asarray(info.std, dtype=np.float64)
    gain = (info.scale / std).astype(np.float32).reshape(1, 3, 1, 1)
    offset = (-np.asarray(info.mean, dtype=np.float64) / std).astype(np.float32).reshape(1, 3, 1, 1)
    order = np.asarray(CHANNEL_SOURCES[info.color], dtype=np.int64)
    inits = [
        numpy_helper.from_array(gain, "mtc_u8_gain"),
        numpy_helper.from_array(offset, "mtc_u8_offset"),
    ]
    nodes = [helper.make_node("Cast", [name], ["mtc_u8_cast"], to=TensorProto.FLOAT)]
    last = "mtc_u8_cast"
    if tuple(order) != (0, 1, 2):
        inits.append(numpy_helper.from_array(order, "mtc_u8_order"))
        nodes.append(helper.make_node("Gather", [last, "mtc_u8_order"], ["mtc_u8_rgb"], axis=3))
        last = "mtc_u8_rgb"
    nodes += [
        helper.make_node("Transpose", [last], ["mtc_u8_nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Mul", ["mtc_u8_nchw", "mtc_u8_gain"], ["mtc_u8_scaled"]),
        helper.make_node("Add", ["mtc_u8_scaled", "mtc_u8_offset"], [_FLOAT_INPUT]),
    ]
    new_nodes = nodes + list(g.node)
    del g.node[:]
    g.node.extend(new_nodes)
    g.initializer.extend(inits)
    new_input = helper.make_tensor_value_info(name, TensorProto.UINT8, [batch, h, w, 3])
    del g.input[:]
    g.input.append(new_input)
    onnx.checker.check_model(out)
    return out


def uint8_frames(info: PreprocessInfo, batch: int, seed: int) -> np.ndarray:
    """Letterboxed uint8 NHWC frames for the check: random sizes, so padding is in them too."""
    rng = np.random.default_rng(seed)
    prep = Preprocessor(info, batch, "uint8", layout="NHWC")
    h, w = info.input_hw
    frames = []
    for _ in range(batch):
        fh, fw = int(h * rng.uniform(0.6, 2.2)), int(w * rng.uniform(0.6, 2.2))
        img = rng.integers(0, 256, (fh, fw, 3), dtype=np.uint8)
        img[: fh // 2] //= 3  # some structure: a dark sky, a brighter road
        frames.append(img)
    return prep(frames)[0].copy()


def check_uint8_input(
    float_model: onnx.ModelProto,
    uint8_model: onnx.ModelProto,
    info: PreprocessInfo,
    batch: int,
    seed: int,
    atol: float = 1e-4,
) -> dict[str, float]:
    """The uint8 graph on letterboxed frames vs the float graph on the same frames prepared by
    the runtime's float preprocess: equal within `atol` per output (masks exactly)."""
    from export.checks.ort import OrtModel

    frames = uint8_frames(info, batch, seed)
    prep = Preprocessor(info, batch)
    floats = np.stack([_normalise(prep, f) for f in frames])
    ref, got = OrtModel(float_model)(floats), OrtModel(uint8_model)(frames)
    worst: dict[str, float] = {}
    for key, r in ref.items():
        diff = np.abs(got[key].astype(np.float64) - r.astype(np.float64))
        worst[key] = float(diff.max(initial=0.0))
        limit = 0.0 if r.dtype.kind in "iu" else atol
        if worst[key] > limit:
            raise ExportError(
                f"the uint8-input graph disagrees with the float one on {key!r} by "
                f"{worst[key]:.3g} (allowed {limit:g}); export without --input uint8 and report it"
            )
    return worst


def _normalise(prep: Preprocessor, letterboxed: np.ndarray) -> np.ndarray:
    """The float path on an already letterboxed frame (its letterbox is the identity)."""
    tensor, _ = prep([letterboxed])
    return tensor[0].copy()
