"""The artifact sidecar: everything the runtime needs to run an `.onnx` or `.engine` file.

`student.onnx` is described by `student.onnx.json` beside it. The export writes it through this
module and the runtime reads it back through this module, so the schema lives in one place: the
dataclasses below. Reading validates every key against the annotations (a generic walk, so a new
field needs no new parsing code) and names the offending key in the error.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import re
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.decoders import DecoderError, get_decoder, list_decoders
from runtime.errors import MtcError
from runtime.fileio import atomic_write_text, file_sha256
from runtime.io_names import (
    DET_LAYOUT_CXCYWH,
    DET_LAYOUT_XYXY,
    INPUT_NAME,
    SEG_ARGMAX,
    SEG_LOGITS,
)
from runtime.spec import (
    DEPLOY_CONF,
    DEPLOY_IOU,
    DEPLOY_MAX_DET,
    DEPLOY_TOPK,
    NMS_CONF,
    NMS_IOU,
    NMS_MAX_DET,
    PAD_VALUE,
    SEG_TASKS,
)
from runtime.tensorrt.targets import FP16_PATHS, INT8_PATHS, TRT_NMS_KINDS

SCHEMA_VERSION = 1
# Artifact suffix -> sidecar `format`.
SUFFIX_FORMATS: dict[str, str] = {".onnx": "onnx", ".engine": "engine", ".plan": "engine"}
FORMATS = ("onnx", "engine")
PRECISIONS = ("fp32", "fp16", "int8")
COLORS = ("RGB", "BGR")
DET_LAYOUTS = (DET_LAYOUT_XYXY, DET_LAYOUT_CXCYWH)
SEG_OUTPUT_KINDS = (SEG_ARGMAX, SEG_LOGITS)
# What does the NMS in the graph: ONNX NonMaxSuppression (mtc-export --nms-in-graph), or what
# the engine builder appended (--trt-nms): the EfficientNMS_TRT plugin or TensorRT's INMSLayer.
NMS_ONNX = "onnx"
NMS_KINDS = (NMS_ONNX, *TRT_NMS_KINDS)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class SidecarError(MtcError):
    """The sidecar is missing, unreadable, or does not match the schema."""


class SidecarNotFoundError(SidecarError):
    """No `<artifact>.json` beside the artifact."""


class ArtifactHashError(SidecarError):
    """The artifact's bytes are not the ones the sidecar describes."""


class SidecarDefaultsWarning(UserWarning):
    """An older sidecar lacks a block added later; its documented default is used (said once)."""


# Field metadata: a key added after schema 1 was frozen. A sidecar without it still loads, with
# the field's default (or READ_DEFAULT, for a field that has none when constructing), and one
# warning names what was assumed.
ADDED_LATER = "added_later"
READ_DEFAULT = "read_default"


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # -1 = dynamic (batch)
    dtype: str  # numpy dtype name: float32, float16, uint8, int32


@dataclass(frozen=True)
class InputInfo:
    name: str = INPUT_NAME
    shape: tuple[int, ...] = field(kw_only=True)  # the model's input size: no default
    dtype: str = "float32"
    layout: str = "NCHW"


@dataclass(frozen=True)
class BatchRange:
    """The batch sizes the artifact accepts: an engine's optimisation profile, or what the ONNX was
    exported for (min=opt=max when the batch dimension is fixed)."""

    min: int = 1
    opt: int = 1
    max: int = 1


@dataclass(frozen=True)
class PreprocessInfo:
    """input = ((rgb_uint8 * scale) - mean) / std after resizing to input_hw (letterboxed
    when `letterbox`). Size, normalisation and letterbox come from the model: no defaults."""

    input_hw: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    letterbox: bool
    pad_value: int = PAD_VALUE
    color: str = "RGB"
    scale: float = 1.0 / 255.0


@dataclass(frozen=True)
class DeployThresholds:
    """What mtc-run / runtime.run keep by default: boxes scoring above `conf_thres`, at most
    `topk` best candidates per image go into class-aware NMS at `iou_thres`, `max_det` survive."""

    conf_thres: float = DEPLOY_CONF
    iou_thres: float = DEPLOY_IOU
    max_det: int = DEPLOY_MAX_DET
    topk: int = DEPLOY_TOPK


@dataclass(frozen=True)
class DetInfo:
    """`conf_thres` / `iou_thres` / `max_det` are the evaluation thresholds (and, with
    `nms_in_graph`, the ones baked into the graph); `deploy` holds what the runtime applies."""

    decoded_in_graph: bool = True
    nms_in_graph: bool = False
    conf_thres: float = NMS_CONF
    iou_thres: float = NMS_IOU
    max_det: int = NMS_MAX_DET
    anchors: tuple[tuple[tuple[float, float], ...], ...] = ()
    strides: tuple[int, ...] = ()
    class_names: tuple[str, ...] = field(kw_only=True)
    layout: str = DET_LAYOUT_XYXY
    deploy: DeployThresholds = field(
        default_factory=DeployThresholds,
        metadata={ADDED_LATER: "deploy defaults conf 0.25, iou 0.45, max_det 100, topk 1000"},
    )
    # The detection decoder (runtime.decoders) and its bins; with decoded_in_graph false the
    # runtime decodes the raw output with it. No default: the model spec names it. Sidecars
    # written before decoders were named all came from the anchor-based head.
    decoder: str = field(
        kw_only=True,
        metadata={ADDED_LATER: "decoder 'yolop_anchor'", READ_DEFAULT: "yolop_anchor"},
    )
    reg_max: int = field(default=0, metadata={ADDED_LATER: "reg_max 0"})
    # Which NMS is in the graph (NMS_KINDS); null without. Older sidecars: null, and an
    # nms_in_graph one had ONNX NonMaxSuppression (the only kind there was).
    nms_kind: str | None = field(
        default=None, metadata={ADDED_LATER: "nms_kind null ('onnx' when nms_in_graph)"}
    )

    def decoder_params(self) -> dict[str, Any]:
        """What `runtime.decoders` decoders take."""
        return {
            "anchors": [list(map(list, lvl)) for lvl in self.anchors],
            "strides": list(self.strides),
            "reg_max": self.reg_max,
            "num_classes": len(self.class_names),
        }


@dataclass(frozen=True)
class SegInfo:
    tasks: tuple[str, ...] = SEG_TASKS
    output: str = SEG_ARGMAX
    # Class count per task, in `tasks` order (what scoring the argmax masks needs); sidecars
    # written before it was recorded were all of two-class (background / foreground) tasks.
    classes: tuple[int, ...] = field(default=(), metadata={ADDED_LATER: "classes 2 per task"})

    def num_classes(self, task: str) -> int:
        i = self.tasks.index(task)
        return self.classes[i] if i < len(self.classes) else 2


@dataclass(frozen=True)
class TensorRTInfo:
    version: str
    gpu: str
    build_flags: tuple[str, ...] = ()
    fp16_path: str | None = None
    timing_cache: str | None = None
    dla_core: int | None = None
    # INT8 engines: how INT8 was built (runtime.tensorrt.targets.INT8_PATHS); DLA builds: the
    # layers TensorRT said cannot run on the DLA (on the GPU instead). Older sidecars: null.
    int8_path: str | None = field(default=None, metadata={ADDED_LATER: "int8_path null"})
    dla_gpu_layers: tuple[str, ...] | None = field(
        default=None, metadata={ADDED_LATER: "dla_gpu_layers null"}
    )


@dataclass(frozen=True)
class Int8Info:
    """How an INT8 (Q/DQ) artifact was quantised: calibration, what stayed in higher precision
    and why, and the per-task deltas the guard measured against the FP32 export.

    `calib_cache` names the TensorRT calibration cache written beside the ONNX from the same
    calibration ranges (implicit quantisation, for DLA on TensorRT 10.x); `fallback` lists the
    layers (ONNX node names) left unquantised, `fallback_reasons` says why, per node."""

    calibration: str = "max"
    calib_images: int = 0
    percentile: float | None = None
    calib_cache: str | None = None
    quantized_ops: tuple[str, ...] = ("Conv",)
    quantized_conv_share: float = 0.0
    quantized_flops_share: float = 0.0
    fallback: tuple[str, ...] = ()
    fallback_reasons: tuple[str, ...] = ()
    deltas: tuple[tuple[str, float], ...] = ()  # (metric, INT8 - FP32 in points)


@dataclass(frozen=True)
class ModelInfo:
    name: str
    params: int | None = None
    flops: float | None = None
    checkpoint_sha256: str | None = None


@dataclass(frozen=True)
class CreatedBy:
    mtc_version: str
    time: str  # ISO 8601, UTC


@dataclass(frozen=True)
class Sidecar:
    format: str
    artifact: str
    sha256: str
    input: InputInfo
    batch: BatchRange
    outputs: tuple[TensorInfo, ...]
    preprocess: PreprocessInfo
    det: DetInfo | None
    seg: SegInfo | None
    precision: str
    model: ModelInfo
    created_by: CreatedBy
    tensorrt: TensorRTInfo | None = None
    source_onnx_sha256: str | None = None
    int8: Int8Info | None = field(default=None, metadata={ADDED_LATER: "int8 null"})
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        _check_semantics(self)

    def output(self, name: str) -> TensorInfo | None:
        return next((o for o in self.outputs if o.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Sidecar:
        if not isinstance(data, dict):
            raise SidecarError(f"sidecar must be a JSON object, got {type(data).__name__}")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise SidecarError(
                f"key 'schema_version' is {version!r}; this runtime reads schema {SCHEMA_VERSION}: "
                "re-export the artifact with this mtc version, or upgrade mtc"
            )
        assumed: list[str] = []
        sc = _build(cls, data, "", assumed)
        if assumed:
            warnings.warn(
                f"sidecar of {sc.artifact} was written by an older mtc and lacks "
                f"{'; '.join(assumed)}: using those (re-export to record them)",
                SidecarDefaultsWarning,
                stacklevel=2,
            )
        return sc

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write JSON to `path` atomically; `sidecar_path(artifact)` is the conventional path."""
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def for_artifact(cls, artifact: str | os.PathLike[str], **fields: Any) -> Sidecar:
        """Fill in what the artifact itself determines (file name, sha256, format from the suffix,
        creator and time); the export passes the rest."""
        path = Path(artifact)
        fields.setdefault("artifact", path.name)
        fields.setdefault("sha256", file_sha256(path))
        fields.setdefault("format", SUFFIX_FORMATS.get(path.suffix, path.suffix.lstrip(".")))
        fields.setdefault("created_by", CreatedBy(_mtc_version(), _utc_now()))
        return cls(**fields)


def sidecar_path(artifact: str | os.PathLike[str]) -> Path:
    """`x/student.onnx` -> `x/student.onnx.json` (the full artifact name, so `.onnx` and `.engine`
    of the same stem never share a sidecar)."""
    p = Path(artifact)
    return p.with_name(p.name + ".json")


def read_sidecar(artifact: str | os.PathLike[str], verify_hash: bool = True) -> Sidecar:
    art = Path(artifact)
    sc_path = sidecar_path(art)
    if not sc_path.is_file():
        raise SidecarNotFoundError(
            f"no sidecar {sc_path} beside {art}: the runtime needs it (input size, preprocessing, "
            "outputs); export the model with mtc-export, which writes it"
        )
    try:
        data = json.loads(sc_path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as e:  # bad JSON, not UTF-8, nested beyond reason
        why = "nested too deeply" if isinstance(e, RecursionError) else str(e)
        raise SidecarError(f"sidecar {sc_path} is not valid JSON ({why}); re-export it") from None
    try:
        sc = Sidecar.from_dict(data)
    except SidecarError as e:
        raise SidecarError(f"sidecar {sc_path}: {e}") from None
    if verify_hash:
        actual = file_sha256(art)
        if actual != sc.sha256:
            raise ArtifactHashError(
                f"sidecar says sha256 {sc.sha256} but {art} hashes to {actual}: the artifact was "
                "rebuilt or replaced; re-export it or pass --no-verify-hash"
            )
    return sc


def _build(cls: type, data: Any, where: str, assumed: list[str]) -> Any:
    if not isinstance(data, dict):
        raise SidecarError(f"key '{where}' must be an object, got {_describe(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise SidecarError(
            f"unknown key '{_join(where, unknown[0])}' (valid keys: {', '.join(fields)})"
        )
    kwargs = {}
    for name in fields:
        key = _join(where, name)
        meta = fields[name].metadata
        if name not in data and ADDED_LATER in meta:
            assumed.append(f"'{key}' ({meta[ADDED_LATER]})")
            if READ_DEFAULT in meta:
                kwargs[name] = meta[READ_DEFAULT]
            continue
        if name not in data:  # the writer writes every key, defaults are for constructing only
            raise SidecarError(
                f"missing key '{key}'; re-export the artifact to rewrite its sidecar"
            )
        kwargs[name] = _convert(hints[name], data[name], key, assumed)
    return cls(**kwargs)


def _convert(tp: Any, value: Any, key: str, assumed: list[str]) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, key, assumed)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key, assumed)  # type: ignore[arg-type]
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise SidecarError(f"key '{key}' must be a list, got {_describe(value)}")
        variadic = len(args) == 2 and args[1] is Ellipsis
        if not variadic and len(value) != len(args):
            raise SidecarError(f"key '{key}' must have {len(args)} items, got {len(value)}")
        item_types = [args[0]] * len(value) if variadic else list(args)
        return tuple(
            _convert(t, v, f"{key}[{i}]", assumed)
            for i, (t, v) in enumerate(zip(item_types, value))
        )
    return _scalar(tp, value, key)


def _scalar(tp: Any, value: Any, key: str) -> Any:
    is_bool = isinstance(value, bool)
    ok = {
        bool: is_bool,
        int: isinstance(value, int) and not is_bool,
        float: isinstance(value, (int, float)) and not is_bool,
        str: isinstance(value, str),
    }.get(tp)
    if ok is None:
        raise TypeError(f"sidecar schema uses unsupported type {tp!r} at {key}")
    if not ok:
        raise SidecarError(f"key '{key}' must be {tp.__name__}, got {_describe(value)}")
    if tp is float:
        try:
            return float(value)
        except OverflowError:
            raise SidecarError(f"key '{key}' is a number too large for a float") from None
    return value


def _check_semantics(sc: Sidecar) -> None:
    """Cross-field rules the types cannot say; messages name the key and the valid values."""
    _one_of("format", sc.format, FORMATS)
    _one_of("precision", sc.precision, PRECISIONS)
    _one_of("input.layout", sc.input.layout, ("NCHW", "NHWC"))
    _one_of("preprocess.color", sc.preprocess.color, COLORS)
    if not _SHA256.match(sc.sha256):
        raise SidecarError(f"key 'sha256' must be 64 lowercase hex digits, got {sc.sha256!r}")
    nhwc = sc.input.layout == "NHWC"  # mtc-export --input uint8: frames prepared in the graph
    if nhwc and sc.input.dtype != "uint8":
        raise SidecarError(
            f"key 'input.layout' is NHWC, which the runtime feeds uint8 frames only, but "
            f"'input.dtype' is {sc.input.dtype!r}; re-export with --input uint8 or float32 NCHW"
        )
    dims = "[B, H, W, 3]" if nhwc else "[B, C, H, W]"
    if len(sc.input.shape) != 4:
        raise SidecarError(f"key 'input.shape' must be {dims}, got {list(sc.input.shape)}")
    hw = sc.input.shape[1:3] if nhwc else sc.input.shape[2:]
    if tuple(hw) != tuple(sc.preprocess.input_hw):
        raise SidecarError(
            f"key 'preprocess.input_hw' is {list(sc.preprocess.input_hw)} but 'input.shape' has "
            f"H, W = {list(hw)}; they must agree"
        )
    b = sc.batch
    if not 1 <= b.min <= b.opt <= b.max:
        raise SidecarError(f"key 'batch' needs 1 <= min <= opt <= max, got {dataclasses.asdict(b)}")
    if sc.det is not None:
        _one_of("det.layout", sc.det.layout, DET_LAYOUTS)
        check_thresholds(sc.det.deploy, "det.deploy.", SidecarError)
        _one_of("det.decoder", sc.det.decoder, tuple(list_decoders()))
        if sc.det.nms_kind is not None:
            _one_of("det.nms_kind", sc.det.nms_kind, NMS_KINDS)
            if not sc.det.nms_in_graph:
                raise SidecarError(
                    f"key 'det.nms_kind' is {sc.det.nms_kind!r} but 'det.nms_in_graph' is false; "
                    "an artifact without NMS in the graph has nms_kind null"
                )
        if not sc.det.decoded_in_graph:
            try:
                get_decoder(sc.det.decoder).check_params(sc.det.decoder_params())
            except DecoderError as e:
                raise SidecarError(f"key 'det': {e}") from None
    if sc.seg is not None:
        _one_of("seg.output", sc.seg.output, SEG_OUTPUT_KINDS)
        if sc.seg.classes and (len(sc.seg.classes) != len(sc.seg.tasks) or min(sc.seg.classes) < 2):
            raise SidecarError(
                f"key 'seg.classes' is {list(sc.seg.classes)}; expected one count >= 2 per task "
                f"of 'seg.tasks' {list(sc.seg.tasks)}"
            )
    if sc.precision == "int8" and sc.int8 is None:
        raise SidecarError("key 'int8' must describe the quantisation for an int8 artifact")
    if sc.format == "engine" and sc.tensorrt is None:
        raise SidecarError("key 'tensorrt' must describe the build (version, gpu) for an engine")
    if sc.tensorrt is not None and sc.tensorrt.fp16_path is not None:
        _one_of("tensorrt.fp16_path", sc.tensorrt.fp16_path, FP16_PATHS)
    if sc.tensorrt is not None and sc.tensorrt.int8_path is not None:
        _one_of("tensorrt.int8_path", sc.tensorrt.int8_path, INT8_PATHS)


def check_thresholds(t: DeployThresholds, prefix: str, error: type[MtcError]) -> None:
    """conf and iou in (0, 1], max_det and topk >= 1; `prefix` names the keys or flags."""
    rules = [
        ("conf_thres", 0.0 < t.conf_thres <= 1.0, "in (0, 1]"),
        ("iou_thres", 0.0 < t.iou_thres <= 1.0, "in (0, 1]"),
        ("max_det", t.max_det >= 1, ">= 1"),
        ("topk", t.topk >= 1, ">= 1"),
    ]
    for name, ok, rule in rules:
        if not ok:
            raise error(f"{prefix}{name} must be {rule}, got {getattr(t, name)!r}")


def _one_of(key: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise SidecarError(f"key '{key}' is {value!r}; expected one of {', '.join(valid)}")


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def _mtc_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mtc")
    except PackageNotFoundError:
        return "0+unknown"


def _utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
