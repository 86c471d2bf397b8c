"""Stand-in artifacts with the exact I/O contract of an exported model, for tests and benchmarks.

`build_standin_onnx` writes a small ONNX (onnx.helper, imported lazily: it is not a runtime
dependency) whose inputs and outputs follow `runtime.io_names`: `images` -> `det` (+ `det_count`),
`drivable`, `lane`. Its NMS-in-graph variant is built from standard ONNX ops only
(NonMaxSuppression, GatherND, CumSum, ScatterND), the recipe the export can follow. Detections
are fixed candidate boxes (seeded); the masks depend on the input (channel > 0), so batch order
and letterbox mapping are observable.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime.io_names import DET_COUNT, DET_OUTPUT, INPUT_NAME, SEG_ARGMAX, SEG_LOGITS
from runtime.sidecar import (
    BatchRange,
    DetInfo,
    InputInfo,
    Int8Info,
    ModelInfo,
    PreprocessInfo,
    SegInfo,
    Sidecar,
    TensorInfo,
    sidecar_path,
)
from runtime.spec import DET_CLASSES, IMAGENET_MEAN, IMAGENET_STD, TASK_DRIVABLE, TASK_LANE

OPSET = 17


@dataclass(frozen=True)
class StandinConfig:
    input_hw: tuple[int, int] = (32, 64)
    num_candidates: int = 6  # rows of `det` without NMS in graph; "yolop_count()" for realism
    nms_in_graph: bool = False
    max_det: int = 8
    conf_thres: float = 0.25
    iou_thres: float = 0.45
    seg_output: str = SEG_ARGMAX
    fixed_batch: int | None = None  # None = dynamic batch dimension
    conv_channels: int = 0  # > 0 adds a conv stack so the backend has real work to do
    batch: BatchRange = BatchRange(1, 1, 8)
    seed: int = 0


def yolop_count(input_hw: tuple[int, int], strides: tuple[int, ...] = (8, 16, 32)) -> int:
    """Rows an anchor-based head with 3 anchors per cell decodes at this input size (the
    built-in YOLOP's strides by default)."""
    return sum(3 * (input_hw[0] // s) * (input_hw[1] // s) for s in strides)


def standin_candidates(cfg: StandinConfig) -> np.ndarray:
    """[N, 6] x1,y1,x2,y2,score,class. The first rows are a known case for NMS: two boxes overlap
    (0.9 and 0.8), one stands apart (0.7), one is under any sane threshold (1e-4)."""
    h, w = cfg.input_hw
    known = np.array(
        [
            [0.10 * w, 0.20 * h, 0.50 * w, 0.60 * h, 0.9, 0],
            [0.12 * w, 0.22 * h, 0.52 * w, 0.62 * h, 0.8, 0],
            [0.60 * w, 0.50 * h, 0.90 * w, 0.90 * h, 0.7, 0],
            [0.00 * w, 0.00 * h, 0.20 * w, 0.20 * h, 1e-4, 0],
        ],
        dtype=np.float32,
    )
    rest = max(0, cfg.num_candidates - len(known))
    rng = np.random.default_rng(cfg.seed)
    xy = rng.uniform(0, 1, (rest, 2)) * [w, h]
    wh = rng.uniform(4, max(5.0, min(h, w) / 4), (rest, 2))
    rare = rng.random(rest) < 0.013  # ~1.3% above a 0.25 threshold, like a real scene
    score = np.where(rare, rng.uniform(0.25, 0.95, rest), rng.uniform(0, 0.2, rest))
    extra = np.column_stack([xy, xy + wh, score, np.zeros(rest)]).astype(np.float32)
    return np.concatenate([known, extra])[: max(cfg.num_candidates, 1)]


def build_standin_onnx(path: str | os.PathLike[str], cfg: StandinConfig | None = None) -> Path:
    import onnx
    from onnx import TensorProto, helper

    cfg = cfg or StandinConfig()
    g = _Graph(helper, onnx.numpy_helper)
    h, w = cfg.input_hw
    batch_dim: Any = cfg.fixed_batch or "batch"
    feature = _conv_stack(g, cfg.conv_channels) if cfg.conv_channels else None
    det_raw = _det_candidates(g, cfg, feature)
    if cfg.nms_in_graph:
        _nms_tail(g, cfg, det_raw)
    else:
        g.node("Identity", [det_raw], [DET_OUTPUT])
    for task, channel in ((TASK_DRIVABLE, 0), (TASK_LANE, 1)):
        _seg_head(g, cfg, task, channel)
    outs = [helper.make_tensor_value_info(n, t, s) for n, t, s in _output_specs(cfg, batch_dim)]
    inp = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [batch_dim, 3, h, w])
    graph = helper.make_graph(g.nodes, "mtc_standin", [inp], outs, g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
    return out


def standin_sidecar(artifact: str | os.PathLike[str], cfg: StandinConfig | None = None) -> Sidecar:
    """The sidecar mtc-export would write for the stand-in (written beside it)."""
    cfg = cfg or StandinConfig()
    h, w = cfg.input_hw
    b = cfg.fixed_batch or -1
    batch = BatchRange(b, b, b) if cfg.fixed_batch else cfg.batch
    det = DetInfo(
        nms_in_graph=cfg.nms_in_graph,
        conf_thres=cfg.conf_thres,
        iou_thres=cfg.iou_thres,
        max_det=cfg.max_det,
        nms_kind="onnx" if cfg.nms_in_graph else None,
        class_names=DET_CLASSES,
        decoder="yolop_anchor",
    )
    outputs = tuple(
        TensorInfo(n, tuple(-1 if isinstance(d, str) else d for d in s), _NP[t])
        for n, t, s in _output_specs(cfg, b)
    )
    sc = Sidecar.for_artifact(
        artifact,
        input=InputInfo(shape=(b, 3, h, w)),
        batch=batch,
        outputs=outputs,
        preprocess=PreprocessInfo((h, w), IMAGENET_MEAN, IMAGENET_STD, letterbox=True),
        det=det,
        seg=SegInfo(output=cfg.seg_output),
        precision="fp32",
        model=ModelInfo("standin", params=0),
    )
    sc.write(sidecar_path(artifact))
    return sc


def build_standin_int8(
    fp32: str | os.PathLike[str], cfg: StandinConfig | None = None, images: int = 4
) -> tuple[Path, dict[str, float]]:
    """A Q/DQ ONNX of the stand-in (`<stem>_int8.onnx` beside `fp32`, which needs
    `conv_channels` > 0), by `quantize_like_int8` on random images."""
    cfg = cfg or StandinConfig()
    rng = np.random.default_rng(cfg.seed)
    feeds = [rng.normal(0, 1, (1, 3, *cfg.input_hw)).astype(np.float32) for _ in range(images)]
    return quantize_like_int8(fp32, feeds)


def quantize_like_int8(
    fp32: str | os.PathLike[str],
    images: list[np.ndarray],
    out: str | os.PathLike[str] | None = None,
) -> tuple[Path, dict[str, float]]:
    """A Q/DQ ONNX of `fp32` (default `<stem>_int8.onnx` beside it) in the layout mtc-export
    --int8 makes (int8, symmetric, per-channel weights, Q/DQ on Conv inputs), by ONNX Runtime's
    quantize_static calibrated (max) on `images`; and the amax per FP32 tensor its scales say
    (what a calibration cache is written from). For tests and benchmarks that need a Q/DQ ONNX
    without the export's own calibration."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.it = iter([{INPUT_NAME: np.ascontiguousarray(x, np.float32)} for x in images])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    src = Path(fp32)
    dest = Path(out) if out is not None else src.with_name(f"{src.stem}_int8.onnx")
    quantize_static(
        str(src),
        str(dest),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["Conv"],
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
    )
    model = onnx.load(str(dest))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    amax = {
        n.input[0]: float(inits[n.input[1]]) * 127.0
        for n in model.graph.node
        if n.op_type == "QuantizeLinear" and n.input[0] not in inits
    }
    return dest, amax


def standin_int8_sidecar(
    artifact: str | os.PathLike[str], cfg: StandinConfig | None = None, calib_cache: str = ""
) -> Sidecar:
    """The stand-in's sidecar for its Q/DQ ONNX: precision int8 with an `int8` block naming
    `calib_cache` (the file beside it), written beside `artifact`."""
    base = standin_sidecar(artifact, cfg)
    info = Int8Info(calibration="max", calib_images=4, calib_cache=calib_cache or None)
    sc = dataclasses.replace(base, precision="int8", int8=info)
    sc.write(sidecar_path(artifact))
    return sc


_NP = {1: "float32", 2: "uint8", 6: "int32"}  # onnx.TensorProto codes used here


def _output_specs(cfg: StandinConfig, b: Any) -> list[tuple[str, int, list[Any]]]:
    h, w = cfg.input_hw
    rows = cfg.max_det if cfg.nms_in_graph else max(cfg.num_candidates, 1)
    specs: list[tuple[str, int, list[Any]]] = [(DET_OUTPUT, 1, [b, rows, 6])]
    if cfg.nms_in_graph:
        specs.append((DET_COUNT, 6, [b]))
    seg = (1, [b, 2, h, w]) if cfg.seg_output == SEG_LOGITS else (2, [b, h, w])
    return specs + [(TASK_DRIVABLE, *seg), (TASK_LANE, *seg)]


class _Graph:
    """Node/initializer accumulator with unique names."""

    def __init__(self, helper: Any, numpy_helper: Any) -> None:
        self.helper, self.np_helper = helper, numpy_helper
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self._n = 0

    def const(self, value: Any, dtype: Any = np.float32) -> str:
        self._n += 1
        name = f"c{self._n}"
        self.inits.append(self.np_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def node(
        self, op: str, inputs: list[str], outputs: list[str] | None = None, **attrs: Any
    ) -> str:
        self._n += 1
        outs = outputs or [f"t{self._n}"]
        self.nodes.append(self.helper.make_node(op, inputs, outs, **attrs))
        return outs[0]


def _conv_stack(g: _Graph, c: int) -> str:
    """Three strided 3x3 convs + ReLU, pooled to [B]: compute for the backend to chew on."""
    rng = np.random.default_rng(1)
    x, cin = INPUT_NAME, 3
    for _ in range(3):
        wgt = g.const(rng.normal(0, 0.1, (c, cin, 3, 3)))
        x = g.node("Relu", [g.node("Conv", [x, wgt], pads=[1, 1, 1, 1], strides=[2, 2])])
        cin = c
    return g.node("ReduceMean", [g.node("GlobalAveragePool", [x])], axes=[1, 2, 3], keepdims=0)


def _det_candidates(g: _Graph, cfg: StandinConfig, feature: str | None) -> str:
    """[B, N, 6] = fixed candidates broadcast over the batch (+ 0 * feature, keeping it live)."""
    base = g.const(standin_candidates(cfg)[None])
    pooled = feature or g.node("ReduceMean", [INPUT_NAME], axes=[1, 2, 3], keepdims=0)
    pooled = g.node("Unsqueeze", [pooled, g.const([1, 2], np.int64)])  # [B, 1, 1]
    return g.node("Add", [base, g.node("Mul", [pooled, g.const(0.0)])])


def _nms_tail(g: _Graph, cfg: StandinConfig, det_raw: str) -> None:
    """Standard-op NMS to a fixed [B, max_det, 6] + det_count [B] (single class)."""
    i64 = np.int64
    boxes = g.node("Slice", [det_raw, g.const([0], i64), g.const([4], i64), g.const([2], i64)])
    score = g.node("Slice", [det_raw, g.const([4], i64), g.const([5], i64), g.const([2], i64)])
    scores = g.node("Transpose", [score], perm=[0, 2, 1])  # [B, 1, N]
    sel = g.node(
        "NonMaxSuppression",
        [
            boxes,
            scores,
            g.const([cfg.max_det], i64),
            g.const([cfg.iou_thres]),
            g.const([cfg.conf_thres]),
        ],
    )
    b_idx = g.node("Slice", [sel, g.const([0], i64), g.const([1], i64), g.const([1], i64)])
    k_idx = g.node("Slice", [sel, g.const([2], i64), g.const([3], i64), g.const([1], i64)])
    rows = g.node("GatherND", [det_raw, g.node("Concat", [b_idx, k_idx], axis=1)])  # [K, 6]
    nb = g.node("Slice", [g.node("Shape", [INPUT_NAME]), g.const([0], i64), g.const([1], i64)])
    arange = g.node("Range", [g.const(0, i64), g.node("Squeeze", [nb]), g.const(1, i64)])
    onehot = g.node(
        "Cast", [g.node("Equal", [b_idx, g.node("Unsqueeze", [arange, g.const([0], i64)])])], to=7
    )  # [K, B] int64
    cums = g.node("CumSum", [onehot, g.const(0, i64)])
    rank = g.node("Sub", [g.node("GatherElements", [cums, b_idx], axis=1), g.const([1], i64)])
    shape = g.node("Concat", [nb, g.const([cfg.max_det, 6], i64)], axis=0)
    zeros = g.node("ConstantOfShape", [shape])
    idx = g.node("Concat", [b_idx, rank], axis=1)
    g.node("ScatterND", [zeros, idx, rows], [DET_OUTPUT])
    count = g.node("ReduceSum", [onehot, g.const([0], i64)], keepdims=0)
    g.node("Cast", [count], [DET_COUNT], to=6)


def _seg_head(g: _Graph, cfg: StandinConfig, task: str, channel: int) -> None:
    """Mask = input channel > 0 (as uint8 argmax, or as logits [-x, x])."""
    i64 = np.int64
    x = g.node(
        "Slice",
        [INPUT_NAME, g.const([channel], i64), g.const([channel + 1], i64), g.const([1], i64)],
    )
    if cfg.seg_output == SEG_LOGITS:
        g.node("Concat", [g.node("Neg", [x]), x], [task], axis=1)
    else:
        positive = g.node("Greater", [g.node("Squeeze", [x, g.const([1], i64)]), g.const(0.0)])
        g.node("Cast", [positive], [task], to=2)
