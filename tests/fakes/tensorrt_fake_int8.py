"""The INT8 and DLA part of the TensorRT fake: what an INT8 engine needs to get through
`runtime.tensorrt` and the runtime on CPU.

Modelled on TensorRT's documentation, only as far as mtc depends on it:
- The ONNX parser makes one layer per ONNX node, named after the node (`INetworkDefinition.
  num_layers` / `get_layer(i)`, `ILayer.name` / `.type`): QuantizeLinear -> LayerType.QUANTIZE,
  DequantizeLinear -> DEQUANTIZE, Conv -> CONVOLUTION, ... (`LAYER_TYPES`).
- 10.x has `BuilderFlag.INT8` and the calibrators (`IInt8EntropyCalibrator2`,
  `IInt8MinMaxCalibrator`, `IBuilderConfig.int8_calibrator`); 11.x removed all of them (the
  10.x -> 11.x Python API migration page): there `config.int8_calibrator = ...` raises.
- A strongly typed network takes no precision flag (INT8 or FP16): the build fails.
- Implicit quantisation (INT8 flag, network without Q/DQ) needs a calibrator. The builder calls
  `read_calibration_cache()`; a cache whose header (`TRT-<NV_TENSORRT_VERSION>-<algorithm>`)
  names another version or another algorithm than the calibrator's is not used, and TensorRT
  calibrates: it calls `get_batch(names)`, and a calibrator with no batch fails the build. A
  tensor without a scale in the cache runs without INT8 (a warning, as TensorRT logs it).
- DLA: `config.can_run_on_DLA(layer)` is True for the layer types in `DLA_LAYER_TYPES` (the
  "DLA Supported Layers and Restrictions" table, coarsely: no per-layer parameter limits), with
  an FP16 or INT8 flag set, and a static profile (DLA has no dynamic dimensions). A layer that
  cannot run on the DLA fails the build unless `BuilderFlag.GPU_FALLBACK` is set.
The parser here is this fake's own (it does not import runtime.tensorrt), so a format mistake
in mtc's cache writer shows up as a rejected cache.
What it cannot model: which kernels, scales or fusions TensorRT picks; an INT8 "engine" here
computes exactly what ONNX Runtime computes on the ONNX it was built from (the Q/DQ ONNX: ORT's
own INT8 arithmetic; the DLA path's FP32 ONNX: FP32, the cache's scales are not applied).
"""

from __future__ import annotations

import enum
import re
import struct
from dataclasses import dataclass
from typing import Any

LAYER_TYPES = {
    "Conv": "CONVOLUTION",
    "ConvTranspose": "DECONVOLUTION",
    "Gemm": "MATRIX_MULTIPLY",
    "MatMul": "MATRIX_MULTIPLY",
    "Relu": "ACTIVATION",
    "Sigmoid": "ACTIVATION",
    "Tanh": "ACTIVATION",
    "LeakyRelu": "ACTIVATION",
    "Clip": "ACTIVATION",
    "HardSigmoid": "ACTIVATION",
    "MaxPool": "POOLING",
    "AveragePool": "POOLING",
    "GlobalAveragePool": "REDUCE",
    "BatchNormalization": "SCALE",
    "Add": "ELEMENTWISE",
    "Sub": "ELEMENTWISE",
    "Mul": "ELEMENTWISE",
    "Div": "ELEMENTWISE",
    "Max": "ELEMENTWISE",
    "Min": "ELEMENTWISE",
    "Pow": "ELEMENTWISE",
    "Equal": "ELEMENTWISE",
    "Greater": "ELEMENTWISE",
    "Less": "ELEMENTWISE",
    "Concat": "CONCATENATION",
    "Resize": "RESIZE",
    "Slice": "SLICE",
    "Softmax": "SOFTMAX",
    "Reshape": "SHUFFLE",
    "Transpose": "SHUFFLE",
    "Flatten": "SHUFFLE",
    "Squeeze": "SHUFFLE",
    "Unsqueeze": "SHUFFLE",
    "Identity": "IDENTITY",
    "QuantizeLinear": "QUANTIZE",
    "DequantizeLinear": "DEQUANTIZE",
    "ReduceMean": "REDUCE",
    "ReduceSum": "REDUCE",
    "ReduceMax": "REDUCE",
    "ArgMax": "TOPK",
    "TopK": "TOPK",
    "Gather": "GATHER",
    "GatherElements": "GATHER",
    "GatherND": "GATHER",
    "Cast": "CAST",
    "Shape": "SHAPE",
    "NonMaxSuppression": "NMS",
    "ScatterND": "SCATTER",
    "Neg": "UNARY",
    "Exp": "UNARY",
    "Abs": "UNARY",
    "Sqrt": "UNARY",
    "Constant": "CONSTANT",
    "ConstantOfShape": "FILL",
    "Range": "FILL",
    "CumSum": "CUMULATIVE",
    "Where": "SELECT",
}
# Layers the mtc network tail adds after parsing (tensorrt_fake_layers ops).
ADDED_LAYER_TYPES = {
    "constant": "CONSTANT",
    "gather": "GATHER",
    "elementwise": "ELEMENTWISE",
    "cast": "CAST",
    "shuffle": "SHUFFLE",
    "concat": "CONCATENATION",
    "topk": "TOPK",
    "reduce": "REDUCE",
    "scatter": "SCATTER",
    "nms": "NMS",
    "plugin": "PLUGIN_V2",
}
LAYER_TYPE_NAMES = sorted({*LAYER_TYPES.values(), *ADDED_LAYER_TYPES.values(), "UNKNOWN"})
# DLA on Orin (TensorRT 10.x, "DLA Supported Layers and Restrictions"), by layer type only.
DLA_LAYER_TYPES = {
    "CONVOLUTION",
    "DECONVOLUTION",
    "ACTIVATION",
    "POOLING",
    "SCALE",
    "ELEMENTWISE",
    "CONCATENATION",
    "RESIZE",
    "SLICE",
    "SOFTMAX",
    "SHUFFLE",
    "REDUCE",
    "UNARY",
}
ALGORITHMS = {  # calibrator class -> CalibrationAlgoType member (and the cache header's name)
    "IInt8EntropyCalibrator2": ("ENTROPY_CALIBRATION_2", "EntropyCalibration2"),
    "IInt8MinMaxCalibrator": ("MINMAX_CALIBRATION", "MinMaxCalibration"),
}


@dataclass
class ParsedLayer:
    """One ILayer the ONNX parser made."""

    name: str
    type: Any  # LayerType member
    op_type: str
    outputs: tuple[str, ...]


def parsed_layers(proto: Any, layer_type: Any) -> list[ParsedLayer]:
    out = []
    for node in proto.graph.node:
        kind = LAYER_TYPES.get(node.op_type, "UNKNOWN")
        name = node.name or f"node_of_{node.output[0]}"
        out.append(ParsedLayer(name, layer_type[kind], node.op_type, tuple(node.output)))
    return out


def version_number(version: str) -> int:
    """NV_TENSORRT_VERSION (NvInferVersion.h): 10.3.0 -> 100300; 8.6.1 -> 8601."""
    major, minor, patch = (int(p) for p in (version.split(".") + ["0", "0"])[:3])
    return major * (10000 if major >= 10 else 1000) + minor * 100 + patch


def parse_cache(data: bytes) -> tuple[int, str, dict[str, float]] | None:
    """(version, algorithm, scales) of a calibration cache in TensorRT's text format, or None
    when it is not one."""
    try:
        lines = [ln for ln in bytes(data).decode("ascii").splitlines() if ln]
    except UnicodeDecodeError:
        return None
    head = re.fullmatch(r"TRT-(\d+)-(\w+)", lines[0]) if lines else None
    if head is None:
        return None
    scales = {}
    for line in lines[1:]:
        name, _, value = line.rpartition(": ")
        if not name or not re.fullmatch(r"[0-9a-f]{8}", value):
            return None
        scales[name] = struct.unpack(">f", bytes.fromhex(value))[0]
    return int(head.group(1)), head.group(2), scales


def calibrator_classes(state: Any, algo_type: Any) -> dict[str, type]:
    """IInt8EntropyCalibrator2 / IInt8MinMaxCalibrator: a subclass overrides get_batch_size,
    get_batch, read_calibration_cache, write_calibration_cache (TensorRT's Python API)."""
    classes: dict[str, type] = {}
    for cls_name, (member, _) in ALGORITHMS.items():

        def get_algorithm(self: Any, _m: str = member) -> Any:
            return algo_type[_m]

        def init(self: Any) -> None:
            state.calls.append(("calibrator_init", type(self).__name__))

        classes[cls_name] = type(cls_name, (), {"__init__": init, "get_algorithm": get_algorithm})
    return classes


def implicit_int8(state: Any, network: Any, config: Any) -> tuple[str | None, dict[str, Any]]:
    """(why the build fails or None, what the plan records) for an INT8 build of a network
    without Q/DQ: the calibrator's cache, or TensorRT's own calibration (asking for batches)."""
    calib = getattr(config, "int8_calibrator", None)
    if calib is None:
        return "INT8 without Q/DQ layers needs a calibrator (config.int8_calibrator)", {}
    algo_name = dict(ALGORITHMS.values())[calib.get_algorithm().name]
    data = calib.read_calibration_cache()
    parsed = parse_cache(data) if data else None
    state.calls.append(("read_calibration_cache", bytes(data or b"")))
    want = version_number(state.version)
    if parsed is None or parsed[0] != want or parsed[1] != algo_name:
        state.warning(f"calibration cache not used (want TRT-{want}-{algo_name}); calibrating")
        names = [t.name for t in network.inputs]
        if not calib.get_batch(names):
            return "Calibration failure: the calibrator gave no batch", {}
        return "the fake cannot calibrate from batches (give a calibration cache)", {}
    scales = parsed[2]
    tensors = [t.name for t in network.inputs] + [
        o for p in network.parsed_layers for o in p.outputs
    ]
    missing = [t for t in tensors if t not in scales]
    for t in missing:
        state.warning(f"Missing scale and zero-point for tensor {t}, expect fall back to non-int8")
    return None, {"mode": "implicit", "scales": len(scales), "missing_scales": missing}


def can_run_on_dla(config: Any, layer: Any, flag_names: set[str]) -> bool:
    dynamic = any(not s[0] == s[1] == s[2] for p in config.profiles for s in p.shapes.values())
    kind = getattr(layer.type, "name", "UNKNOWN")
    return kind in DLA_LAYER_TYPES and bool({"FP16", "INT8"} & flag_names) and not dynamic


def dla_problem(config: Any, network: Any, flags: set[str]) -> tuple[str | None, dict[str, Any]]:
    """A DLA build: every layer on the DLA, or GPU_FALLBACK set."""
    gpu = [layer.name for layer in network.all_layers() if not can_run_on_dla(config, layer, flags)]
    if gpu and "GPU_FALLBACK" not in flags:
        return f"{len(gpu)} layers cannot run on DLA and GPU fallback is off: {gpu[:3]}", {}
    return None, {"core": config.DLA_core, "gpu_layers": gpu}


def layer_type_enum() -> Any:
    return enum.Enum("LayerType", LAYER_TYPE_NAMES)


def algo_type_enum() -> Any:
    return enum.Enum("CalibrationAlgoType", [m for m, _ in ALGORITHMS.values()])
