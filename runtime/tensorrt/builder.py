"""ONNX -> serialized TensorRT engine: the one builder every caller goes through.

- `mtc-export --engine` builds through `build_serialized_engine` (export/tensorrt/build.py only
  picks which ONNX to parse and where the timing cache lives).
- `python -m runtime.tensorrt model.onnx ...` (runtime/tensorrt/cli.py) builds on a machine with
  mtc's runtime installed.
- `mtc-export` writes `<name>_build_engine.py` beside the ONNX: this package's modules bundled
  into one file (runtime/tensorrt/bundle.py) with the export's arguments, so the build on the
  target needs only TensorRT's Python package (no torch, no mtc). That is why the modules it
  bundles import nothing but the standard library at import time.
- Latency probes time engines built by `build_serialized_engine` on the device.

FP16 by TensorRT version (never silently FP32), as the target table (runtime/tensorrt/targets.py)
says for the installed version:
- fp16_path "builder_flag" (10.x): weakly typed network from the FP32 ONNX + `BuilderFlag.FP16`,
  after checking `platform_has_fast_fp16`.
- fp16_path "strongly_typed_fp16_onnx" (11.x, no `BuilderFlag.FP16`): strongly typed network from
  the FP16 ONNX, whose own tensor types carry the precision.
The engine's sidecar is the source ONNX's sidecar with the engine's facts put in
(runtime/tensorrt/engine_sidecar.py), so the runtime finds the same input, outputs and
preprocessing in both.

Optional NMS in the engine (`--trt-nms`, runtime/tensorrt/nms.py): appended to the parsed network.

INT8 (`precision="int8"`), by what the installed TensorRT has (`int8_path_for`):
- "qdq_int8_fp16_flags" (10.x): weakly typed network from the Q/DQ ONNX (`<name>_int8.onnx`) +
  `BuilderFlag.INT8` + `BuilderFlag.FP16`: the Q/DQ pairs fix where INT8 runs, the other layers
  may run in FP16 (TensorRT picks per layer).
- "qdq_strongly_typed" (11.x: no `BuilderFlag.INT8`, no calibrators): strongly typed network from
  the same Q/DQ ONNX; the layers outside Q/DQ run in the ONNX's own types (FP32).
- "implicit_calib_cache" (10.x with `dla_core`, for Orin's DLA): the FP32 ONNX + `BuilderFlag.INT8`
  + FP16 + a calibrator that only hands TensorRT the calibration cache written at export
  (runtime/tensorrt/calibration.py: the same calibrated ranges as the Q/DQ ONNX), GPU fallback
  on. DLA is refused, before building, for a dynamic profile, a device without DLA and TensorRT
  11; the layers `config.can_run_on_DLA` says no to are listed in the sidecar (`dla_gpu_layers`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.fileio import atomic_write_bytes
from runtime.tensorrt.calibration import (
    CALIBRATOR_CLASSES,
    DEFAULT_CALIBRATOR,
    cache_calibrator,
    check_calibrator,
    dla_calibration_cache,
)
from runtime.tensorrt.device import import_tensorrt, query_gpu_name
from runtime.tensorrt.errors import EngineBuildError, TensorRTUnavailableError
from runtime.tensorrt.nms import NmsSpec, append_nms, resolve_nms_kind
from runtime.tensorrt.targets import (
    FP16_BUILDER_FLAG,
    FP16_PATHS,
    FP16_STRONGLY_TYPED,
    INT8_IMPLICIT_CACHE,
    INT8_QDQ_FLAGS,
    INT8_QDQ_STRONGLY_TYPED,
    PRECISIONS,
    TARGETS,
    target_for_version,
)

Shapes = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]


@dataclass(frozen=True)
class BuildInfo:
    """What was built, with what: the `tensorrt` section of the engine's sidecar."""

    version: str
    gpu: str
    build_flags: tuple[str, ...]
    fp16_path: str | None
    timing_cache: str | None
    dla_core: int | None
    nms: NmsSpec | None = None
    nms_rows: int = 0  # K, the rows of `det` with NMS in the engine
    int8_path: str | None = None  # INT8_PATHS, for precision int8
    # DLA builds: the layers `config.can_run_on_DLA` said no to (they run on the GPU)
    dla_gpu_layers: tuple[str, ...] | None = None

    def sidecar_section(self) -> dict[str, Any]:
        gpu_layers = self.dla_gpu_layers
        return {
            "version": self.version,
            "gpu": self.gpu,
            "build_flags": list(self.build_flags),
            "fp16_path": self.fp16_path,
            "timing_cache": self.timing_cache,
            "dla_core": self.dla_core,
            "int8_path": self.int8_path,
            "dla_gpu_layers": list(gpu_layers) if gpu_layers is not None else None,
        }


# -- the FP16 path of the installed TensorRT --------------------------------------------------
def installed_target(trt: Any) -> tuple[str, str] | None:
    """(target name, fp16_path) of the installed TensorRT (`targets.target_for_version`); None
    when its version is unreadable or older than every target."""
    target = target_for_version(str(trt.__version__))
    return (target.name, target.fp16_path) if target else None


def fp16_path_for(trt: Any) -> str:
    """The installed version's target says; a TensorRT without `BuilderFlag.FP16` (11.x removed
    it) can only build strongly typed, whatever the table says."""
    if not hasattr(trt.BuilderFlag, "FP16"):
        return FP16_STRONGLY_TYPED
    target = installed_target(trt)
    return target[1] if target else FP16_BUILDER_FLAG


def check_fp16_path(trt: Any, fp16_path: str) -> None:
    """A recipe made for one TensorRT line must not be built, silently different, on another."""
    if fp16_path not in FP16_PATHS:
        raise EngineBuildError(f"fp16_path {fp16_path!r} is not one of {', '.join(FP16_PATHS)}")
    target = installed_target(trt)
    if fp16_path == FP16_BUILDER_FLAG and fp16_path_for(trt) != FP16_BUILDER_FLAG:
        fix = f"--trt-target {target[0]}" if target else "the --trt-target of this TensorRT"
        raise EngineBuildError(
            f"TensorRT {trt.__version__} has no FP16 builder flag: re-export with {fix}"
        )
    if fp16_path == FP16_STRONGLY_TYPED and target is None:
        known = ", ".join(
            f"{t.name} (from {t.min_version[0]}.{t.min_version[1]})" for t in TARGETS.values()
        )
        raise EngineBuildError(
            f"TensorRT {trt.__version__} is too old for this export (targets: {known})"
        )


# -- the build --------------------------------------------------------------------------------
def build_serialized_engine(
    onnx_bytes: bytes,
    *,
    precision: str,
    input_shapes: Shapes,
    workspace_mib: int = 1024,
    opt_level: int = 3,
    timing_cache: Path | None = None,
    trt: Any | None = None,
    fp16_path: str | None = None,
    dla_core: int | None = None,
    gpu: str | None = None,
    nms: NmsSpec | None = None,
    calib_cache: bytes | None = None,
) -> tuple[bytes, BuildInfo]:
    """Parse `onnx_bytes`, build one engine, return its plan and what was built.

    `input_shapes`: input name -> (min, opt, max) shapes of the one optimisation profile.
    `precision` "fp16" picks the FP16 path by the TensorRT version unless `fp16_path` names one
    (then a version that cannot do it is an error); on the strongly typed path `onnx_bytes` must
    be the FP16 ONNX. `precision` "int8": `onnx_bytes` is the Q/DQ ONNX, or with `dla_core` the
    FP32 ONNX and `calib_cache` the calibration cache's bytes (`int8_path_for`).
    `timing_cache`: a file loaded before and saved (atomically) after the build.
    `nms`: NMS appended to the network (`append_nms`); its kind must be one the target has.
    """
    if precision not in PRECISIONS:
        raise EngineBuildError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    trt = trt if trt is not None else import_tensorrt()
    if dla_core is not None:
        check_dla_profile(input_shapes)
    path = int8 = calibrator = None
    if precision == "fp16":
        path = fp16_path or fp16_path_for(trt)
        check_fp16_path(trt, path)
    if precision == "int8":
        int8 = int8_path_for(trt, dla_core)
        if int8 == INT8_IMPLICIT_CACHE:
            calibrator = cache_calibrator(trt, dla_calibration_cache(calib_cache))
    if nms is not None:
        resolve_nms_kind(trt, nms.kind)  # refused here, before the builder, in one line
    logger = trt.Logger(trt.Logger.WARNING)
    builder = _builder(trt, logger)
    if path == FP16_BUILDER_FLAG and not getattr(builder, "platform_has_fast_fp16", True):
        raise EngineBuildError(
            "--engine fp16 asked for, but this GPU has no fast FP16; use --engine fp32"
        )
    strongly = path == FP16_STRONGLY_TYPED or int8 == INT8_QDQ_STRONGLY_TYPED
    network, _parser = _network(trt, builder, logger, onnx_bytes, strongly)
    names = [network.get_input(i).name for i in range(network.num_inputs)]
    unknown = [n for n in input_shapes if n not in names]
    if unknown:  # TensorRT would only log it and return no plan
        raise EngineBuildError(
            f"the optimisation profile names input(s) {unknown} but the ONNX's inputs are "
            f"{names}; the ONNX and its sidecar disagree: re-export them together"
        )
    if int8 is not None:
        check_int8_network(trt, network, int8)
    rows, _weights = append_nms(trt, network, nms) if nms is not None else (0, [])
    config, flags = _builder_config(trt, builder, workspace_mib, opt_level, path, input_shapes)
    if int8 is not None:
        flags += _int8_flags(trt, builder, config, int8, calibrator)
    if nms is not None:
        flags.append(nms.flag())
    gpu_layers = None
    if dla_core is not None:
        flags += _use_dla(trt, builder, config, dla_core)
        gpu_layers = dla_gpu_layers(config, network)
    if strongly:
        flags.append("STRONGLY_TYPED")
    gpu = gpu or query_gpu_name()
    if timing_cache is not None:
        _attach_timing_cache(config, timing_cache)
    plan = builder.build_serialized_network(network, config)
    check_calibrator(trt, calibrator)
    if plan is None:
        raise EngineBuildError(
            f"TensorRT {trt.__version__} build_serialized_network returned None on {gpu}; the "
            "TensorRT log above says why (often: workspace too small, try --workspace 8192)"
        )
    if timing_cache is not None:
        atomic_write_bytes(timing_cache, bytes(config.get_timing_cache().serialize()))
    cache = str(timing_cache) if timing_cache is not None else None
    info = BuildInfo(
        str(trt.__version__), gpu, tuple(flags), path, cache, dla_core, nms, rows, int8, gpu_layers
    )
    return bytes(plan), info


def _builder(trt: Any, logger: Any) -> Any:
    try:
        return trt.Builder(logger)
    except Exception as e:  # no CUDA device / driver: TensorRT raises from its factory
        raise TensorRTUnavailableError(
            f"TensorRT {trt.__version__} is installed but cannot create a builder ({e}); "
            "an engine needs an NVIDIA GPU with a working driver"
        ) from None


def _network(
    trt: Any, builder: Any, logger: Any, onnx_bytes: bytes, strongly_typed: bool
) -> tuple[Any, Any]:
    flags = 0
    if strongly_typed and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineBuildError(
            f"TensorRT {trt.__version__} could not parse the ONNX ({len(errors)} error(s)): "
            + " | ".join(errors[:5])
            + "; the lint report names ops to look at"
        )
    return network, parser


def _builder_config(
    trt: Any,
    builder: Any,
    workspace_mib: int,
    opt_level: int,
    fp16_path: str | None,
    input_shapes: Shapes,
) -> tuple[Any, list[str]]:
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    config.builder_optimization_level = opt_level
    flags = [f"workspace={workspace_mib}MiB", f"opt_level={opt_level}"]
    if fp16_path == FP16_BUILDER_FLAG:
        config.set_flag(trt.BuilderFlag.FP16)
        flags.append("FP16")
    if not input_shapes:  # static inputs: TensorRT makes the one profile itself
        return config, flags
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in input_shapes.items():
        profile.set_shape(name, tuple(lo), tuple(opt), tuple(hi))
    if config.add_optimization_profile(profile) < 0:
        raise EngineBuildError(
            f"TensorRT rejected the optimisation profile {input_shapes}: each input needs "
            "min <= opt <= max in every dimension"
        )
    flags += [_profile_flag(name, s, len(input_shapes)) for name, s in input_shapes.items()]
    return config, flags


def _profile_flag(name: str, shapes: tuple[tuple[int, ...], ...], n_inputs: int) -> str:
    """`profile=1/2/8` (the batch range) for one input, `profile:<name>=AxB/..` for several."""
    if n_inputs == 1:
        return "profile=" + "/".join(str(s[0]) for s in shapes)
    return f"profile:{name}=" + "/".join("x".join(map(str, s)) for s in shapes)


def _use_dla(trt: Any, builder: Any, config: Any, core: int) -> list[str]:
    cores = int(getattr(builder, "num_DLA_cores", 0))
    if core >= cores:
        raise EngineBuildError(
            f"--dla-core {core} asked for, but this device has {cores} DLA core(s) "
            f"(Jetson Orin AGX/NX have 2, Orin Nano none); drop --dla-core"
        )
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = core
    config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    return [f"DLA_core={core}", "GPU_FALLBACK"]


def _attach_timing_cache(config: Any, path: Path) -> None:
    data = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(data)
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        raise EngineBuildError(
            f"TensorRT rejected the timing cache {path} (corrupt or from another device / "
            "version); delete it and build again"
        )


# -- INT8: the Q/DQ ONNX, or (DLA) the FP32 ONNX + the calibration cache ----------------------
def int8_path_for(trt: Any, dla_core: int | None) -> str:
    """How this TensorRT builds INT8 (INT8_PATHS). DLA needs implicit quantisation (TensorRT
    10.x on Orin: DLA did not take explicit Q/DQ), which TensorRT 11 removed with
    `BuilderFlag.INT8` and the calibrators."""
    has_flag = hasattr(trt.BuilderFlag, "INT8")
    if dla_core is None:
        return INT8_QDQ_FLAGS if has_flag else INT8_QDQ_STRONGLY_TYPED
    if not has_flag or not hasattr(trt, CALIBRATOR_CLASSES[DEFAULT_CALIBRATOR]):
        raise EngineBuildError(
            f"--dla-core {dla_core} with INT8 needs implicit quantisation (BuilderFlag.INT8 + a "
            f"calibration cache), which TensorRT {trt.__version__} removed; build the DLA "
            "engine with TensorRT 10.x (JetPack 6), or drop --dla-core for a GPU INT8 engine"
        )
    return INT8_IMPLICIT_CACHE


def check_dla_profile(input_shapes: Shapes) -> None:
    """DLA does not support dynamic dimensions: the profile's min, opt and max must be equal
    (TensorRT's "DLA Supported Layers and Restrictions")."""
    dynamic = {n: s for n, s in input_shapes.items() if not s[0] == s[1] == s[2]}
    if dynamic:
        name, (lo, _, hi) = next(iter(dynamic.items()))
        raise EngineBuildError(
            f"--dla-core: DLA runs static shapes only, but the profile of {name!r} goes from "
            f"{'x'.join(map(str, lo))} to {'x'.join(map(str, hi))}; export with one batch size "
            "(--min-batch B --batch B --max-batch B)"
        )


def _layers(network: Any) -> list[Any]:
    return [network.get_layer(i) for i in range(network.num_layers)]


def check_int8_network(trt: Any, network: Any, int8: str) -> None:
    """The Q/DQ paths need Q/DQ layers (else TensorRT builds no INT8 and says little); the
    implicit path must not have them (the calibration cache is ignored on a Q/DQ network)."""
    kinds = {trt.LayerType.QUANTIZE, trt.LayerType.DEQUANTIZE}
    qdq = sum(1 for layer in _layers(network) if layer.type in kinds)
    if int8 != INT8_IMPLICIT_CACHE and qdq == 0:
        raise EngineBuildError(
            "precision int8 builds from the Q/DQ ONNX (<name>_int8.onnx, from mtc-export --int8), "
            "but this ONNX has no QuantizeLinear/DequantizeLinear; pass the _int8.onnx"
        )
    if int8 == INT8_IMPLICIT_CACHE and qdq:
        raise EngineBuildError(
            f"the DLA INT8 build quantises the FP32 ONNX with the calibration cache, but this "
            f"ONNX has {qdq} Q/DQ layers; pass <name>.onnx, not <name>_int8.onnx"
        )


def _int8_flags(
    trt: Any, builder: Any, config: Any, int8: str, calibrator: Any | None
) -> list[str]:
    if int8 == INT8_QDQ_STRONGLY_TYPED:  # precision comes from the ONNX's Q/DQ and types
        return []
    if not getattr(builder, "platform_has_fast_int8", True):
        raise EngineBuildError(
            "--engine int8 asked for, but this GPU has no fast INT8; use --engine fp16"
        )
    config.set_flag(trt.BuilderFlag.INT8)
    flags = ["INT8"]
    if getattr(builder, "platform_has_fast_fp16", True):  # the layers outside INT8 in FP16
        config.set_flag(trt.BuilderFlag.FP16)
        flags.append("FP16")
    if calibrator is not None:
        config.int8_calibrator = calibrator
        flags.append(f"calib_cache={calibrator.algorithm_name}({calibrator.tensors} tensors)")
    return flags


def dla_gpu_layers(config: Any, network: Any) -> tuple[str, ...]:
    """The layers TensorRT says cannot run on the DLA with this config (they fall back to the
    GPU). Asked before the build; the builder may move more (DLA subgraph limits)."""
    return tuple(layer.name for layer in _layers(network) if not config.can_run_on_DLA(layer))
