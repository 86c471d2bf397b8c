"""The TensorRT releases mtc exports for, and the words that differ by release: one entry per
target, read by everything that differs by TensorRT version (ExportConfig and `mtc-export
--trt-target`, the GPU-free lint, the trtexec script, the engine builder, the sidecar schema).
Adding a TensorRT release is adding one `register_target(TrtTarget(...))` here plus its
operator table `export/tensorrt/data/trt_ops_<name>.json` (docs/EXTENDING.md).

Standard library only (and `runtime.errors`, `runtime.registry`): the sidecar schema reads its
vocabulary from here without importing the builder, and the device build script carries this
file as it is."""

from __future__ import annotations

from dataclasses import dataclass

from runtime.errors import MtcError
from runtime.registry import Registry

# How FP16 is built (`TrtTarget.fp16_path`, the sidecar's `tensorrt.fp16_path`).
FP16_BUILDER_FLAG = "builder_flag"  # 10.x: weakly typed network + BuilderFlag.FP16
FP16_STRONGLY_TYPED = "strongly_typed_fp16_onnx"  # 11.x: strongly typed, from the FP16 ONNX
FP16_PATHS = (FP16_BUILDER_FLAG, FP16_STRONGLY_TYPED)
PRECISIONS = ("fp16", "fp32", "int8")
# How INT8 is built (the sidecar's `tensorrt.int8_path`).
INT8_QDQ_FLAGS = "qdq_int8_fp16_flags"  # 10.x: Q/DQ ONNX, weakly typed, BuilderFlag.INT8 + FP16
INT8_QDQ_STRONGLY_TYPED = "qdq_strongly_typed"  # 11.x: Q/DQ ONNX, strongly typed
INT8_IMPLICIT_CACHE = "implicit_calib_cache"  # 10.x DLA: FP32 ONNX + INT8 flag + cache calibrator
INT8_PATHS = (INT8_QDQ_FLAGS, INT8_QDQ_STRONGLY_TYPED, INT8_IMPLICIT_CACHE)
# NMS appended to the engine (`--trt-nms`, `TrtTarget.trt_nms`, the sidecar's `det.nms_kind`):
# the EfficientNMS_TRT plugin or the native INMSLayer.
NMS_NONE, NMS_AUTO, NMS_EFFICIENT, NMS_INMS = "none", "auto", "efficient", "inms"
TRT_NMS_KINDS = (NMS_EFFICIENT, NMS_INMS)
TRT_NMS_CHOICES = (NMS_NONE, NMS_AUTO, *TRT_NMS_KINDS)


class TrtTargetError(MtcError):
    """A TensorRT target that is not in the table."""


@dataclass(frozen=True)
class TrtTarget:
    """One TensorRT release line, as far as export and build care.

    name: what `--trt-target` takes and reports write ("10.3", "11").
    min_version: the lowest installed TensorRT (major, minor) this target stands for; an installed
        version maps to the entry with the highest min_version not above it.
    op_table: the onnx-tensorrt operator table, a file in export/tensorrt/data/ (or an absolute path).
    opset_min / opset_max: the ONNX opsets its parser takes.
    const_axes: Squeeze/Unsqueeze `axes` must be graph constants (dynamic axes came in 10.7).
    fp16_path: how FP16 is built: FP16_BUILDER_FLAG (weakly typed network + BuilderFlag.FP16)
        or FP16_STRONGLY_TYPED (strongly typed network parsed from the FP16 ONNX).
    trtexec_fp16: the trtexec flags of that FP16 path.
    platform: where users meet it (for messages and docs).
    trtexec_int8: the trtexec flags that build the Q/DQ ONNX (`--engine int8`) on that target.
    dla_int8: whether DLA INT8 (implicit quantisation from a calibration cache: `--int8 --calib`)
        exists there.
    trt_nms: the NMS kinds `--trt-nms` may append to the engine's network on this target
        (runtime/tensorrt/nms.py: NMS_EFFICIENT = the EfficientNMS_TRT plugin, NMS_INMS = the
        native INMSLayer, `network.add_nms`), the first being what `--trt-nms auto` picks (from
        TensorRT 10.12 on, where EfficientNMS_TRT is deprecated, auto prefers INMSLayer when
        listed)."""

    name: str
    min_version: tuple[int, int]
    op_table: str
    opset_min: int
    opset_max: int
    const_axes: bool
    fp16_path: str
    trtexec_fp16: tuple[str, ...]
    platform: str
    trt_nms: tuple[str, ...] = ()
    trtexec_int8: tuple[str, ...] = ()
    dla_int8: bool = False

    @property
    def strongly_typed(self) -> bool:
        """FP16 comes from the ONNX's own tensor types (an FP16 ONNX is needed)."""
        return self.fp16_path == FP16_STRONGLY_TYPED


# Every target by name, in release order (`target_for_version` picks among them by min_version).
TARGETS: Registry[TrtTarget] = Registry(
    "TensorRT target",
    TrtTargetError,
    unknown="{kind} {name} is not one of {names}",
    fix=" (each target is an entry in runtime/tensorrt/targets.py)",
)


def register_target(target: TrtTarget) -> TrtTarget:
    """Add a TensorRT release line under `target.name`; a name taken already raises."""
    return TARGETS.register(target.name, target)


register_target(
    TrtTarget(
        name="10.3",
        min_version=(10, 0),
        op_table="trt_ops_10.3.json",
        opset_min=9,
        opset_max=20,
        const_axes=True,
        fp16_path=FP16_BUILDER_FLAG,
        trtexec_fp16=("--fp16",),
        platform="JetPack 6 (Jetson Orin), TensorRT 10.x",
        # INMSLayer exists since 8.5 (so in every 10.x); EfficientNMS_TRT v1 ships with 10.x and
        # is deprecated from 10.12.
        trt_nms=(NMS_EFFICIENT, NMS_INMS),
        # Q/DQ ONNX, weakly typed: INT8 where the Q/DQ pairs are, FP16 allowed elsewhere
        trtexec_int8=("--int8", "--fp16"),
        dla_int8=True,
    )
)
register_target(
    TrtTarget(
        name="11",
        min_version=(11, 0),
        op_table="trt_ops_11.json",
        opset_min=9,
        opset_max=24,
        const_axes=False,
        fp16_path=FP16_STRONGLY_TYPED,
        trtexec_fp16=("--stronglyTyped",),
        platform="JetPack 7.2+ and desktop GPUs (CUDA 13), TensorRT 11.x",
        # EfficientNMS_TRT v1 is deprecated (10.12) and the IPluginV2 interfaces it implements
        # are deprecated in 11.x: new engines for 11 use the native layer only.
        trt_nms=(NMS_INMS,),
        # 11.x removed --int8/--fp16/--calib: the Q/DQ ONNX's own types decide (strongly typed)
        trtexec_int8=("--stronglyTyped",),
    )
)

# Where no TensorRT is installed to follow: JetPack 6, the oldest platform users run.
DEFAULT_TARGET = "10.3"


def target_names() -> tuple[str, ...]:
    """The targets' names in registration order (what `--trt-target` offers)."""
    return tuple(TARGETS)


def get_target(name: str) -> TrtTarget:
    """The entry called `name`; an unknown name lists the known ones and the closest match."""
    return TARGETS.get(name)


def parse_version(version: str | None) -> tuple[int, int] | None:
    """(major, minor) of a TensorRT version string ("10.3.0.30" -> (10, 3)); None if unreadable."""
    parts = (version or "").split(".")
    if not parts[0].isdigit():
        return None
    minor = parts[1] if len(parts) > 1 and parts[1].isdigit() else "0"
    return int(parts[0]), int(minor)


def target_for_version(version: str | None) -> TrtTarget | None:
    """The target an installed TensorRT (its `tensorrt.__version__`) builds for; None when the
    version is unreadable or older than every target."""
    v = parse_version(version)
    if v is None:
        return None
    fits = [t for t in TARGETS.values() if t.min_version <= v]
    return max(fits, key=lambda t: t.min_version) if fits else None


def resolve_target(name: str | None, installed_version: str | None) -> TrtTarget:
    """The target asked for, else the installed TensorRT's, else DEFAULT_TARGET."""
    if name is not None:
        return get_target(name)
    return target_for_version(installed_version) or get_target(DEFAULT_TARGET)
