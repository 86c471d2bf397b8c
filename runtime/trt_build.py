#!/usr/bin/env python3
"""ONNX -> serialized TensorRT engine (+ its sidecar): the one builder every caller goes through.

- `mtc-export --engine` builds through `build_serialized_engine` (export/tensorrt/build.py only
  picks which ONNX to parse and where the timing cache lives).
- `python -m runtime.trt_build model.onnx ...` builds on a machine with mtc's runtime installed.
- `mtc-export` ships a copy of this file beside the ONNX as `<name>_build_engine.py`, with the
  export's arguments written into SHIPPED_ARGS, so the build on the target needs only TensorRT's
  Python package (no torch, no mtc). That is why this module imports nothing but the standard
  library at import time, and mtc's own helpers only where they are installed.
- Latency probes time engines built by `build_serialized_engine` on the device.

FP16 by TensorRT version (never silently FP32), as the target table (runtime/trt_targets.py)
says for the installed version (the shipped copy carries the table's rows in SHIPPED_TARGETS):
- fp16_path "builder_flag" (10.x): weakly typed network from the FP32 ONNX + `BuilderFlag.FP16`,
  after checking `platform_has_fast_fp16`.
- fp16_path "strongly_typed_fp16_onnx" (11.x, no `BuilderFlag.FP16`): strongly typed network from
  the FP16 ONNX, whose own tensor types carry the precision.
The engine's sidecar is the source ONNX's sidecar with the engine's facts put in
(`engine_sidecar`), so the runtime finds the same input, outputs and preprocessing in both.

Optional NMS in the engine (`--trt-nms`, `NmsSpec`): from an ONNX *without* NMS (det rows
[B, N, 6] x1 y1 x2 y2 score class), the builder appends NMS to the parsed network and gives it
the outputs the runtime reads for `nms_in_graph`: `det` [B, K, 6] best first and `det_count` [B]
int32 (K = min(max_det, N)). "efficient" = the EfficientNMS_TRT plugin (IPluginV2, deprecated from
10.12); "inms" = the native INMSLayer (`network.add_nms`, which returns indices: a scatter, a top-k
and a gather turn them into rows). Class-aware either way: scores go in one-hot per class. Which
kinds a TensorRT target has is the target table's `trt_nms` (SHIPPED_TARGETS' 4th item).

INT8 (`precision="int8"`), by what the installed TensorRT has (`int8_path_for`):
- "qdq_int8_fp16_flags" (10.x): weakly typed network from the Q/DQ ONNX (`<name>_int8.onnx`) +
  `BuilderFlag.INT8` + `BuilderFlag.FP16`: the Q/DQ pairs fix where INT8 runs, the other layers
  may run in FP16 (TensorRT picks per layer).
- "qdq_strongly_typed" (11.x: no `BuilderFlag.INT8`, no calibrators): strongly typed network from
  the same Q/DQ ONNX; the layers outside Q/DQ run in the ONNX's own types (FP32).
- "implicit_calib_cache" (10.x with `dla_core`, for Orin's DLA): the FP32 ONNX + `BuilderFlag.INT8`
  + FP16 + a calibrator that only hands TensorRT the calibration cache written at export
  (`write_calibration_cache`: the same calibrated ranges as the Q/DQ ONNX), GPU fallback on. DLA
  is refused, before building, for a dynamic profile, a device without DLA and TensorRT 11; the
  layers `config.can_run_on_DLA` says no to are listed in the sidecar (`dla_gpu_layers`).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:  # inside mtc: user errors are MtcErrors, so every CLI prints them as one line
    from runtime.errors import MtcError as _ErrorBase
except ImportError:  # the copy shipped beside the ONNX, on a machine without mtc
    _ErrorBase = Exception  # type: ignore[misc,assignment]

FP16_BUILDER_FLAG = "builder_flag"
FP16_STRONGLY_TYPED = "strongly_typed_fp16_onnx"
FP16_PATHS = (FP16_BUILDER_FLAG, FP16_STRONGLY_TYPED)
PRECISIONS = ("fp16", "fp32", "int8")
INT8_QDQ_FLAGS = "qdq_int8_fp16_flags"  # 10.x: Q/DQ ONNX, weakly typed, BuilderFlag.INT8 + FP16
INT8_QDQ_STRONGLY_TYPED = "qdq_strongly_typed"  # 11.x: Q/DQ ONNX, strongly typed
INT8_IMPLICIT_CACHE = "implicit_calib_cache"  # 10.x DLA: FP32 ONNX + INT8 flag + cache calibrator
INT8_PATHS = (INT8_QDQ_FLAGS, INT8_QDQ_STRONGLY_TYPED, INT8_IMPLICIT_CACHE)
# TensorRT's calibrator classes by the algorithm name its cache header carries. DLA needs
# EntropyCalibration2 (IInt8EntropyCalibrator2 docs: "the required calibrator for DLA").
CALIBRATOR_CLASSES = {
    "EntropyCalibration2": "IInt8EntropyCalibrator2",
    "MinMaxCalibration": "IInt8MinMaxCalibrator",
}
DEFAULT_CALIBRATOR = "EntropyCalibration2"
CALIB_CACHE_TRT_VERSION = "10.3.0"  # JetPack 6: the only platform the cache is for (DLA, 10.x)
NMS_NONE, NMS_AUTO, NMS_EFFICIENT, NMS_INMS = "none", "auto", "efficient", "inms"
TRT_NMS_KINDS = (NMS_EFFICIENT, NMS_INMS)
TRT_NMS_CHOICES = (NMS_NONE, NMS_AUTO, *TRT_NMS_KINDS)
EFFICIENT_NMS_DEPRECATED_FROM = (10, 12)  # TensorRT 10.12 release notes: EfficientNMS_TRT v1
INMS_TOPK_MAX = 5000  # INMSLayer's TopK box limit cap (2000 on SM 5.3 / 6.2, no Orin)
TOPK_K_MAX = 3840  # ITopKLayer's largest K
# runtime.io_names' spellings (this file also runs alone, beside the ONNX)
DET_NAME, DET_COUNT_NAME = "det", "det_count"
INSTALL_HINT = (
    "install TensorRT's Python package on the machine that will run the engine: desktop GPUs "
    "`pip install tensorrt` (NVIDIA's wheels; tensorrt-cu12 for CUDA 12), Jetson JetPack "
    "`sudo apt install python3-libnvinfer` (venv with --system-site-packages)"
)
# mtc-export writes the build's arguments here in the copy it ships; empty in the package.
SHIPPED_ARGS: list[str] = []
# ... and the TensorRT target table's rows, (name, (major, minor) from, fp16_path, trt_nms);
# empty in the package, which reads runtime/trt_targets.py itself.
SHIPPED_TARGETS: list[tuple[str, tuple[int, int], str, tuple[str, ...]]] = []

Shapes = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]


class TensorRTUnavailableError(_ErrorBase):
    """TensorRT (or a CUDA device it can use) is not there."""


class EngineBuildError(_ErrorBase):
    """TensorRT is there, but parsing, configuring or building the engine failed."""


class CalibrationCacheError(_ErrorBase):
    """A calibration cache that cannot be written or read as TensorRT's text format."""


@dataclass(frozen=True)
class NmsSpec:
    """NMS appended to the network: the kind and what is baked in. The runtime can only
    tighten conf / max_det afterwards, so these are the deploy thresholds by default."""

    kind: str  # NMS_EFFICIENT | NMS_INMS
    conf_thres: float
    iou_thres: float
    max_det: int
    topk: int  # candidates per image into NMS (INMSLayer's TopK box limit; EfficientNMS: 4096)
    num_classes: int

    def flag(self) -> str:
        return (
            f"nms={self.kind}(conf={self.conf_thres:g},iou={self.iou_thres:g},"
            f"max_det={self.max_det},topk={self.topk})"
        )


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


# -- TensorRT and the device ----------------------------------------------------------------------
def import_tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError:
        raise TensorRTUnavailableError(f"TensorRT is not installed; {INSTALL_HINT}") from None
    return tensorrt


def installed_version() -> str | None:
    """TensorRT's version if its Python package imports here, else None (never raises)."""
    try:
        import tensorrt
    except Exception:  # ImportError, or a broken install raising OSError on its libraries
        return None
    return str(getattr(tensorrt, "__version__", "unknown"))


def trt_major(trt: Any) -> int:
    return int(str(trt.__version__).split(".")[0])


Row = tuple[str, tuple[int, int], str, tuple[str, ...]]


def target_rows() -> list[Row]:
    """(name, lowest (major, minor), fp16_path, trt_nms) per TensorRT target: the shipped copy's
    rows, else runtime/trt_targets.py; none for a bare copy of this file (then only
    capabilities count)."""
    if SHIPPED_TARGETS:
        return [(n, (int(v[0]), int(v[1])), p, tuple(k)) for n, v, p, k in SHIPPED_TARGETS]
    try:
        from runtime.trt_targets import TARGETS
    except ImportError:
        return []
    return [(t.name, t.min_version, t.fp16_path, t.trt_nms) for t in TARGETS]


def version_of(trt: Any) -> tuple[int, int] | None:
    parts = str(trt.__version__).split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        return None


def installed_row(trt: Any) -> Row | None:
    """The installed TensorRT's target row: the one with the highest lowest version not above
    it (runtime.trt_targets.target_for_version, on the rows); None when the version is
    unreadable or older than every target."""
    version = version_of(trt)
    fits = [row for row in target_rows() if version is not None and row[1] <= version]
    return max(fits, key=lambda row: row[1]) if fits else None


def installed_target(trt: Any) -> tuple[str, str] | None:
    """(target name, fp16_path) of the installed TensorRT (`installed_row`)."""
    row = installed_row(trt)
    return (row[0], row[2]) if row else None


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
    rows = target_rows()
    if fp16_path == FP16_STRONGLY_TYPED and rows and target is None:
        known = ", ".join(f"{r[0]} (from {r[1][0]}.{r[1][1]})" for r in rows)
        raise EngineBuildError(
            f"TensorRT {trt.__version__} is too old for this export (targets: {known})"
        )


def query_gpu_name() -> str:
    """GPU 0's name: mtc's CUDA adapter, else cuda-python, else nvidia-smi, else the Jetson
    device-tree model. It keys the timing cache and is recorded in the sidecar."""
    for query in (_gpu_from_mtc, _gpu_from_cuda_python, _gpu_from_nvidia_smi, _gpu_from_jetson):
        try:
            name = query()
        except Exception:  # no bindings / no driver / no tool: try the next source
            continue
        if name:
            return name
    return "unknown-gpu"


def _gpu_from_mtc() -> str:
    from runtime.backends.cuda_memory import create_memory

    mem = create_memory("auto")
    try:
        return mem.device_name()
    finally:
        mem.close()


def _gpu_from_cuda_python() -> str:
    from cuda.bindings import runtime as cudart

    err, props = cudart.cudaGetDeviceProperties(0)
    if err != cudart.cudaError_t.cudaSuccess:
        return ""
    name = props.name
    return name.decode(errors="replace").rstrip("\x00") if isinstance(name, bytes) else str(name)


def _gpu_from_nvidia_smi() -> str:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return ""
    out = subprocess.run(
        [exe, "--query-gpu=name", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    lines = out.stdout.strip().splitlines() if out.returncode == 0 else []
    return lines[0].strip() if lines else ""


def _gpu_from_jetson() -> str:
    return Path("/proc/device-tree/model").read_text(errors="replace").replace("\x00", "").strip()


def default_timing_cache_dir() -> Path:
    """Per-user cache, so every build on this machine reuses tactic timings."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mtc" / "tensorrt_timing"


def timing_cache_file(cache_dir: str | os.PathLike[str], gpu: str, version: str) -> Path:
    """Tactic timings are only valid for one device and one TensorRT version."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", gpu).strip("-").lower() or "gpu"
    return Path(cache_dir) / f"timing_{slug}_trt{version}.cache"


# -- the build -------------------------------------------------------------------------------------
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
            calibrator = cache_calibrator(trt, _dla_cache(calib_cache))
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
    _check_calibrator(trt, calibrator)
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


# -- INT8: the Q/DQ ONNX, or (DLA) the FP32 ONNX + the calibration cache ---------------------------
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


def _dla_cache(data: bytes | None) -> CalibrationCache:
    if data is None:
        raise EngineBuildError(
            "--dla-core with INT8 needs the calibration cache (<name>_int8.calib, written by "
            "mtc-export --int8 beside the ONNX); pass --calib PATH"
        )
    try:
        text = bytes(data).decode("ascii")
    except UnicodeDecodeError:
        raise EngineBuildError("the calibration cache is not TensorRT's text format") from None
    try:
        return parse_calibration_cache(text)
    except CalibrationCacheError as e:
        raise EngineBuildError(str(e)) from None


def cache_calibrator(trt: Any, cache: CalibrationCache) -> Any:
    """A TensorRT calibrator that only hands over `cache` (no batches: the ranges were
    calibrated at export, on the same images as the Q/DQ ONNX). The header is written for the
    installed TensorRT: the scales are ours, not a TensorRT calibration, so nothing in them
    depends on its version. If TensorRT still asks for batches it did not take the cache."""
    base = getattr(trt, CALIBRATOR_CLASSES[cache.algorithm], None)
    if base is None:
        raise EngineBuildError(
            f"TensorRT {trt.__version__} has no {CALIBRATOR_CLASSES[cache.algorithm]} "
            "(implicit quantisation was removed in TensorRT 11)"
        )
    data = cache.text(version=trt_version_number(str(trt.__version__))).encode("ascii")

    class CacheOnlyCalibrator(base):  # type: ignore[misc,valid-type]
        algorithm_name, tensors = cache.algorithm, len(cache.scales)

        def __init__(self) -> None:
            base.__init__(self)  # type: ignore[misc]
            self.batches_asked = 0

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: Any, *args: Any) -> None:
            self.batches_asked += 1
            return None  # no calibration data here: the cache is the calibration

        def read_calibration_cache(self, *args: Any) -> bytes:
            return data

        def write_calibration_cache(self, cache: Any, *args: Any) -> None:
            return None

    return CacheOnlyCalibrator()


def _check_calibrator(trt: Any, calibrator: Any | None) -> None:
    if calibrator is not None and calibrator.batches_asked:
        raise EngineBuildError(
            f"TensorRT {trt.__version__} did not take the calibration cache (it asked for "
            "calibration batches); re-export with mtc-export --int8 to rewrite <name>_int8.calib"
        )


# -- the calibration cache: TensorRT's text format -------------------------------------------------
@dataclass(frozen=True)
class CalibrationCache:
    """`TRT-<version>-<algorithm>`, then `<tensor>: <scale>` per line, the scale (amax / 127)
    as the hex of its big-endian float32 (sampleINT8's README; NVIDIA's forum answers)."""

    version: int  # NV_TENSORRT_VERSION of the header (`trt_version_number`)
    algorithm: str  # a key of CALIBRATOR_CLASSES
    scales: dict[str, float]  # tensor name -> scale, as float32 rounds it

    def amax(self) -> dict[str, float]:
        return {name: scale * 127.0 for name, scale in self.scales.items()}

    def text(self, version: int | None = None) -> str:
        head = f"TRT-{self.version if version is None else version}-{self.algorithm}\n"
        rows = (f"{name}: {struct.pack('>f', s).hex()}\n" for name, s in self.scales.items())
        return head + "".join(rows)


def trt_version_number(version: str) -> int:
    """NV_TENSORRT_VERSION, as the cache header spells it: major*10000 + minor*100 + patch
    from TensorRT 10 (NvInferVersion.h NV_TENSORRT_VERSION_INT: 10.3.0 -> 100300), major*1000
    + minor*100 + patch before (8.6.1 -> 8601, 7.0.0 -> 7000)."""
    parts = [int(p) if p.isdigit() else 0 for p in (str(version).split(".") + ["0", "0"])[:3]]
    major, minor, patch = parts
    return major * (10000 if major >= 10 else 1000) + minor * 100 + patch


def write_calibration_cache(
    path: str | os.PathLike[str],
    amax: Mapping[str, float],
    calibrator: str = DEFAULT_CALIBRATOR,
    trt_version: str | None = None,
) -> Path:
    """Write TensorRT's calibration cache for per-tensor ranges `amax` (tensor name of the FP32
    ONNX -> the calibrated absolute maximum; scale = amax / 127), atomically. `trt_version`
    for the header defaults to the installed TensorRT's, else 10.3.0 (JetPack 6, where DLA
    builds from it; the builder rewrites the header for the TensorRT it runs on anyway)."""
    if calibrator not in CALIBRATOR_CLASSES:
        raise CalibrationCacheError(
            f"calibrator {calibrator!r} is not one of {', '.join(CALIBRATOR_CLASSES)}"
        )
    bad = [n for n, v in amax.items() if not (math.isfinite(v) and v > 0)]
    odd = [n for n in amax if not n or n != n.strip() or any(c in n for c in "\r\n")]
    if not amax or bad or odd:
        why = f"amax must be finite and > 0, got {[(n, amax[n]) for n in bad[:3]]}" if bad else ""
        why = why or (f"tensor names must be one line, got {odd[:3]}" if odd else "no tensors")
        raise CalibrationCacheError(f"cannot write the calibration cache {path}: {why}")
    scales = {
        n: struct.unpack(">f", struct.pack(">f", float(v) / 127.0))[0] for n, v in amax.items()
    }
    version = trt_version_number(trt_version or installed_version() or CALIB_CACHE_TRT_VERSION)
    text = CalibrationCache(version, calibrator, scales).text()
    return atomic_write_bytes(path, text.encode("ascii"))


def parse_calibration_cache(text: str, where: str = "calibration cache") -> CalibrationCache:
    """The inverse of `CalibrationCache.text`; names may hold colons (`input_1:0: 3c010a14`)."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    head = re.fullmatch(r"TRT-(\d+)-(\w+)", lines[0].strip()) if lines else None
    if head is None or head.group(2) not in CALIBRATOR_CLASSES:
        first = lines[0][:60] if lines else ""
        raise CalibrationCacheError(
            f"{where}: the first line must be TRT-<version>-<calibrator> with a calibrator of "
            f"{', '.join(CALIBRATOR_CLASSES)}, got {first!r}"
        )
    scales: dict[str, float] = {}
    for i, line in enumerate(lines[1:], start=2):
        name, sep, value = line.rpartition(":")
        try:
            scale = struct.unpack(">f", bytes.fromhex(value.strip()))[0] if sep and name else None
        except (ValueError, struct.error):
            scale = None
        if scale is None:
            raise CalibrationCacheError(f"{where} line {i} is not '<tensor>: <8 hex digits>'")
        scales[name.strip()] = scale
    return CalibrationCache(int(head.group(1)), head.group(2), scales)


def load_calibration_cache(path: str | os.PathLike[str]) -> CalibrationCache:
    p = Path(path)
    if not p.is_file():
        raise CalibrationCacheError(
            f"no calibration cache {p}; mtc-export --int8 writes <name>_int8.calib beside the ONNX"
        )
    try:
        text = p.read_text(encoding="ascii")
    except UnicodeDecodeError:
        raise CalibrationCacheError(f"{p} is not a TensorRT calibration cache (not text)") from None
    return parse_calibration_cache(text, str(p))


# -- NMS in the engine -----------------------------------------------------------------------------
def supported_nms(trt: Any) -> tuple[tuple[str, ...], str]:
    """(NMS kinds, where) for the installed TensorRT, from its target row; a bare copy of this
    file without rows tries what is asked (TensorRT itself then says no)."""
    row = installed_row(trt)
    if row is None:
        return TRT_NMS_KINDS, f"TensorRT {trt.__version__}"
    return row[3], f"TensorRT target {row[0]} (installed {trt.__version__})"


def resolve_nms_kind(trt: Any, asked: str | None) -> str | None:
    """`--trt-nms` -> the kind to append (None: no NMS in the engine). `auto` = the target's
    first kind, or INMSLayer from 10.12 on (where EfficientNMS_TRT is deprecated)."""
    if asked in (None, NMS_NONE):
        return None
    if asked not in TRT_NMS_CHOICES:
        raise EngineBuildError(f"--trt-nms {asked!r} is not one of {', '.join(TRT_NMS_CHOICES)}")
    kinds, where = supported_nms(trt)
    if asked == NMS_AUTO:
        if not kinds:
            raise EngineBuildError(f"--trt-nms auto: {where} has no in-engine NMS; use none")
        version = version_of(trt)
        late = version is not None and version >= EFFICIENT_NMS_DEPRECATED_FROM
        return NMS_INMS if late and NMS_INMS in kinds else kinds[0]
    if asked not in kinds:
        alt = f"--trt-nms {kinds[0]} or none" if kinds else "--trt-nms none"
        raise EngineBuildError(
            f"--trt-nms {asked}: {where} supports {', '.join(kinds) or 'no in-engine NMS'}; "
            f"use {alt}"
        )
    return asked


def nms_spec_from_sidecar(
    side: dict[str, Any], kind: str, overrides: dict[str, Any] | None = None
) -> NmsSpec:
    """What to bake in: the source ONNX sidecar's deploy thresholds (what mtc-run applies),
    unless `overrides` (conf_thres / iou_thres / max_det / topk) say otherwise. The ONNX must
    give decoded rows x1 y1 x2 y2 score class without NMS."""
    det = side.get("det")
    if not isinstance(det, dict):
        raise EngineBuildError(
            "--trt-nms: the ONNX has no detection output (sidecar 'det' is null)"
        )
    if det.get("nms_in_graph"):
        raise EngineBuildError(
            "--trt-nms: this ONNX already has NMS in its graph (det + det_count); build from the "
            "export made without --nms-in-graph"
        )
    if not det.get("decoded_in_graph", True) or det.get("layout") != "xyxy_score_class":
        raise EngineBuildError(
            f"--trt-nms needs decoded rows (det.layout 'xyxy_score_class'), the sidecar says "
            f"{det.get('layout')!r}{'' if det.get('decoded_in_graph', True) else ', raw output'}"
        )
    dep = {"conf_thres": 0.25, "iou_thres": 0.45, "max_det": 100, "topk": 1000}
    dep.update(det.get("deploy") or {})
    dep.update({k: v for k, v in (overrides or {}).items() if v is not None})
    spec = NmsSpec(
        kind,
        float(dep["conf_thres"]),
        float(dep["iou_thres"]),
        int(dep["max_det"]),
        int(dep["topk"]),
        len(det.get("class_names") or ()) or 1,
    )
    if not (0 < spec.conf_thres <= 1 and 0 < spec.iou_thres <= 1):
        raise EngineBuildError(
            f"--nms-conf and --nms-iou must be in (0, 1], got {spec.conf_thres}, {spec.iou_thres}"
        )
    if spec.max_det < 1 or spec.topk < 1:
        raise EngineBuildError(f"--nms-max-det and --nms-topk must be >= 1, got {spec.max_det}")
    return spec


class _Net:
    """The few network calls the NMS tail makes, with constants kept alive until the build
    (TensorRT reads Weights memory at build time, not when the layer is added)."""

    def __init__(self, trt: Any, network: Any) -> None:
        import numpy as np  # TensorRT's Python API takes numpy arrays as Weights

        self.trt, self.net, self.np = trt, network, np
        self.keep: list[Any] = []

    def const(self, value: Any, dtype: str) -> Any:
        arr = self.np.array(value, dtype=dtype, order="C")  # 0-d stays 0-d (scalar inputs)
        self.keep.append(arr)
        return self.net.add_constant(arr.shape, arr).get_output(0)

    def gather(self, data: Any, idx: Any, axis: int, elementwise_dims: int = 0) -> Any:
        layer = self.net.add_gather(data, idx, axis)
        layer.num_elementwise_dims = elementwise_dims
        return layer.get_output(0)

    def columns(self, det: Any, cols: list[int]) -> Any:
        return self.gather(det, self.const(cols, "int32"), 2)

    def op(self, a: Any, b: Any, name: str) -> Any:
        return self.net.add_elementwise(
            a, b, getattr(self.trt.ElementWiseOperation, name)
        ).get_output(0)

    def cast(self, x: Any, dtype: str) -> Any:
        return self.net.add_cast(x, getattr(self.trt.DataType, dtype)).get_output(0)

    def reshape(self, x: Any, dims: tuple[int, ...]) -> Any:
        layer = self.net.add_shuffle(x)
        layer.reshape_dims = dims  # 0 copies the input's dimension (the dynamic batch)
        return layer.get_output(0)


def append_nms(trt: Any, network: Any, spec: NmsSpec) -> tuple[int, list[Any]]:
    """Replace the network output `det` [B, N, 6] with `det` [B, K, 6] best first + `det_count`
    [B] int32 after `spec.kind` NMS; returns K and the constants' arrays (keep them alive
    until the network is built)."""
    outs = {network.get_output(i).name: network.get_output(i) for i in range(network.num_outputs)}
    det = outs.get(DET_NAME)
    if det is None or DET_COUNT_NAME in outs:
        raise EngineBuildError(
            f"--trt-nms needs an ONNX output {DET_NAME!r} and none called {DET_COUNT_NAME!r}; "
            f"the network's outputs are {sorted(outs)}"
        )
    shape = tuple(det.shape)
    if len(shape) != 3 or shape[1] < 1 or shape[2] != 6:
        raise EngineBuildError(f"--trt-nms needs {DET_NAME} as [B, N, 6], the ONNX has {shape}")
    n = int(shape[1])
    k = min(spec.max_det, n, TOPK_K_MAX)
    g = _Net(trt, network)
    boxes, score = g.columns(det, [0, 1, 2, 3]), g.columns(det, [4])  # [B,N,4], [B,N,1]
    scores = score
    if spec.num_classes > 1:  # one-hot per class: a box competes only inside its own class
        classes = g.const([[list(range(spec.num_classes))]], "float32")
        onehot = g.cast(g.op(g.columns(det, [5]), classes, "EQUAL"), "FLOAT")
        scores = g.op(onehot, score, "PROD")  # [B,N,C]
    if spec.kind == NMS_EFFICIENT:
        rows, count = _efficient_nms(g, boxes, scores, spec, k)
    else:
        rows, count = _inms(g, det, boxes, scores, score, spec, k)
    network.unmark_output(det)
    det.name = "det_candidates"
    rows.name, count.name = DET_NAME, DET_COUNT_NAME
    network.mark_output(rows)
    network.mark_output(count)
    return k, g.keep


def _efficient_nms(g: _Net, boxes: Any, scores: Any, spec: NmsSpec, k: int) -> tuple[Any, Any]:
    """EfficientNMS_TRT v1 (IPluginV2DynamicExt): num_detections [B,1] int32, detection_boxes
    [B,K,4], detection_scores [B,K], detection_classes [B,K] int32, best first."""
    trt, np = g.trt, g.np
    trt.init_libnvinfer_plugins(trt.Logger(trt.Logger.WARNING), "")
    registry = trt.get_plugin_registry()
    find = getattr(registry, "get_creator", None) or registry.get_plugin_creator
    creator = find("EfficientNMS_TRT", "1", "")
    if creator is None:
        raise EngineBuildError(
            f"TensorRT {trt.__version__} has no EfficientNMS_TRT plugin (libnvinfer_plugin not "
            "installed?); use --trt-nms inms"
        )
    f32, i32 = trt.PluginFieldType.FLOAT32, trt.PluginFieldType.INT32
    fields = [
        ("score_threshold", spec.conf_thres, np.float32, f32),
        ("iou_threshold", spec.iou_thres, np.float32, f32),
        ("max_output_boxes", k, np.int32, i32),
        ("background_class", -1, np.int32, i32),
        ("score_activation", 0, np.int32, i32),
        ("class_agnostic", 0, np.int32, i32),
        ("box_coding", 0, np.int32, i32),  # BoxCorner: x1 y1 x2 y2
    ]
    arrays = [np.array([v], dtype=dt) for _, v, dt, _ in fields]
    g.keep += arrays
    collection = trt.PluginFieldCollection(
        [trt.PluginField(name, a, ft) for (name, _, _, ft), a in zip(fields, arrays)]
    )
    plugin = creator.create_plugin("mtc_efficient_nms", collection)
    if plugin is None:
        raise EngineBuildError(f"TensorRT {trt.__version__} refused the EfficientNMS_TRT fields")
    layer = g.net.add_plugin_v2([boxes, scores], plugin)
    num, out_boxes, out_scores, out_classes = (layer.get_output(i) for i in range(4))
    cls = g.reshape(g.cast(out_classes, "FLOAT"), (0, 0, 1))
    concat = g.net.add_concatenation([out_boxes, g.reshape(out_scores, (0, 0, 1)), cls])
    concat.axis = 2
    return concat.get_output(0), g.reshape(num, (-1,))


def _inms(
    g: _Net, det: Any, boxes: Any, scores: Any, score: Any, spec: NmsSpec, k: int
) -> tuple[Any, Any]:
    """INMSLayer: SelectedIndices [M, 3] (batch, class, box) int32 (M depends on the data) and
    NumOutputBoxes. Fixed-K rows as export/deploy_nms.py does it: the kept boxes' scores
    scattered into zeros [B, N], top-K of those, the rows gathered, zero rows after the count."""
    trt = g.trt
    layer = g.net.add_nms(boxes, scores, g.const(k, "int32"))
    layer.bounding_box_format = trt.BoundingBoxFormat.CORNER_PAIRS
    layer.topk_box_limit = min(spec.topk, int(tuple(det.shape)[1]), INMS_TOPK_MAX)
    layer.set_input(3, g.const(spec.iou_thres, "float32"))
    layer.set_input(4, g.const(spec.conf_thres, "float32"))
    where = g.gather(layer.get_output(0), g.const([0, 2], "int32"), 1)  # [M, 2] (batch, box)
    score2 = g.reshape(score, (0, 0))  # [B, N]
    kept = g.net.add_gather_v2(score2, where, trt.GatherMode.ND).get_output(0)  # [M]
    zeros = g.op(score2, g.const([[0.0]], "float32"), "PROD")
    kept_scores = g.net.add_scatter(zeros, where, kept, trt.ScatterMode.ND).get_output(0)
    top = g.net.add_topk(kept_scores, trt.TopKOperation.MAX, k, 1 << 1)
    values, order = top.get_output(0), top.get_output(1)  # [B, K]
    rows = g.gather(det, order, 1, elementwise_dims=1)  # [B, K, 6]
    valid = g.cast(g.op(values, g.const([[0.0]], "float32"), "GREATER"), "FLOAT")
    rows = g.op(rows, g.reshape(valid, (0, 0, 1)), "PROD")
    total = g.net.add_reduce(valid, trt.ReduceOperation.SUM, 1 << 1, False).get_output(0)
    return rows, g.cast(total, "INT32")


# -- files: atomic writes, hashes, the engine's sidecar --------------------------------------------
def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Temporary name in the target folder, then rename: no half-written file ever looks valid.
    (runtime/fileio.py has the package's helper; this file must also work on its own.)"""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", dir=final.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return final


def sha256_of(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def batch_range(input_shapes: Shapes) -> dict[str, int]:
    """The sidecar's batch range: dimension 0 of the (first) input's profile."""
    lo, opt, hi = next(iter(input_shapes.values()))
    return {"min": int(lo[0]), "opt": int(opt[0]), "max": int(hi[0])}


def engine_sidecar(
    onnx_sidecar: dict[str, Any],
    *,
    engine: Path,
    source_onnx: Path,
    precision: str,
    info: BuildInfo,
    batch: dict[str, int],
    int8: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The engine's sidecar: the source ONNX's, with what differs for the engine put in.
    `runtime.sidecar` validates it when the runtime reads it back. An INT8 engine carries the
    INT8 ONNX's `int8` block (`int8`; default: the source ONNX's own, the Q/DQ ONNX's)."""
    side = dict(onnx_sidecar)
    if precision == "int8":
        side["int8"] = int8 if int8 is not None else side.get("int8")
        if not side["int8"]:
            raise EngineBuildError(
                f"the sidecar of {source_onnx.name} has no 'int8' block (calibration, fallback "
                "layers) for the INT8 engine's sidecar; re-export with mtc-export --int8"
            )
    side.update(
        format="engine",
        artifact=engine.name,
        sha256=sha256_of(engine),
        source_onnx_sha256=sha256_of(source_onnx),
        precision=precision,
        batch=batch,
        tensorrt=info.sidecar_section(),
    )
    if info.nms is not None:
        side.update(_nms_sidecar(side, info.nms, info.nms_rows))
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    side["created_by"] = {**dict(onnx_sidecar.get("created_by") or {}), "time": now}
    return side


def _nms_sidecar(side: dict[str, Any], nms: NmsSpec, rows: int) -> dict[str, Any]:
    """`det` and `outputs` of an engine with NMS appended: what the runtime reads for
    `nms_in_graph` (det [B, K, 6] + det_count [B] int32), the thresholds baked in, the kind."""
    det = {
        **side["det"],
        "nms_in_graph": True,
        "nms_kind": nms.kind,
        "conf_thres": nms.conf_thres,
        "iou_thres": nms.iou_thres,
        "max_det": rows,
    }
    outputs: list[dict[str, Any]] = []
    for out in side["outputs"]:
        if out["name"] != DET_NAME:
            outputs.append(out)
            continue
        outputs.append({**out, "shape": [-1, rows, 6], "dtype": "float32"})
        outputs.append({"name": DET_COUNT_NAME, "shape": [-1], "dtype": "int32"})
    return {"det": det, "outputs": outputs}


def write_engine_sidecar(
    engine: Path,
    source_onnx: Path,
    *,
    precision: str,
    info: BuildInfo,
    batch: dict[str, int],
    dest: Path | None = None,
    int8_sidecar: Path | None = None,
) -> Path:
    """Read `<source_onnx>.json`, write the engine's sidecar to `dest` (default
    `<engine>.json`). mtc-export and the shipped build script both write it here.
    `int8_sidecar`: the INT8 ONNX's sidecar whose `int8` block an INT8 engine built from the
    FP32 ONNX (DLA) carries."""
    data = _read_json(source_onnx.with_name(source_onnx.name + ".json"), source_onnx)
    block = _read_json(int8_sidecar, None).get("int8") if int8_sidecar is not None else None
    side = engine_sidecar(
        data,
        engine=engine,
        source_onnx=source_onnx,
        precision=precision,
        info=info,
        batch=batch,
        int8=block,
    )
    out = dest or engine.with_name(engine.name + ".json")
    atomic_write_bytes(out, (json.dumps(side, indent=2) + "\n").encode("utf-8"))
    return out


def _read_json(path: Path, artifact: Path | None) -> dict[str, Any]:
    if not path.is_file():
        what = f" beside {artifact.name}" if artifact is not None else ""
        raise EngineBuildError(
            f"no sidecar {path}{what}: the engine's sidecar is made from it; copy the whole "
            "export folder, or pass --no-sidecar to build the engine alone"
        )
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def int8_sidecar_for(onnx_path: Path) -> Path:
    """The sidecar with the `int8` block for an INT8 engine from `onnx_path`: its own for the
    Q/DQ ONNX (`x_int8.onnx`), else the Q/DQ ONNX's beside it (`x.onnx` -> `x_int8.onnx.json`)."""
    if onnx_path.stem.endswith("_int8"):
        return onnx_path.with_name(onnx_path.name + ".json")
    return onnx_path.with_name(f"{onnx_path.stem}_int8.onnx.json")


# -- command line: `python -m runtime.trt_build`, and the shipped `<name>_build_engine.py` -------
def parse_shapes(text: str) -> dict[str, tuple[int, ...]]:
    """trtexec spelling: `images:1x3x384x640[,other:...]`."""
    out: dict[str, tuple[int, ...]] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, dims = part.rpartition(":")
        try:
            shape = tuple(int(d) for d in dims.split("x"))
        except ValueError:
            shape = ()
        if not sep or not name or not shape:
            raise EngineBuildError(f"shape {part!r} is not NAME:AxBxC (e.g. images:1x3x384x640)")
        out[name] = shape
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=None if SHIPPED_ARGS else "python -m runtime.trt_build",  # shipped: its file name
        description="Build a TensorRT engine (+ sidecar for mtc-run) from an mtc ONNX export.",
    )
    p.add_argument("onnx", type=Path, help="the .onnx (its .onnx.json sidecar beside it)")
    p.add_argument(
        "--engine", type=Path, help="output (default: beside the ONNX, <stem>_<precision>.engine)"
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp16",
        help="int8: from the Q/DQ ONNX (x_int8.onnx); with --dla-core from x.onnx + --calib",
    )
    p.add_argument(
        "--calib",
        type=Path,
        help="calibration cache for --precision int8 --dla-core (default: the one the INT8 "
        "ONNX's sidecar names, beside the ONNX)",
    )
    p.add_argument("--fp16-path", choices=("auto", *FP16_PATHS), default="auto")
    for k in ("min", "opt", "max"):
        p.add_argument(f"--{k}-shapes", help=f"{k} profile shapes, NAME:AxBxC (default: sidecar)")
    p.add_argument("--workspace", type=int, default=4096, help="workspace pool, MiB")
    p.add_argument("--opt-level", type=int, default=3, help="builder optimisation level 0-5")
    p.add_argument("--cache-dir", type=Path, help="timing cache folder ($MTC_TIMING_CACHE wins)")
    p.add_argument(
        "--dla-core",
        "--dla",
        dest="dla_core",
        type=int,
        help="build for this DLA core (Jetson Orin; GPU fallback on; static shapes only)",
    )
    p.add_argument(
        "--trt-nms",
        choices=TRT_NMS_CHOICES,
        default=NMS_NONE,
        help="append NMS to the engine (det [B,K,6] + det_count): efficient = EfficientNMS_TRT, "
        "inms = INMSLayer, auto = what this TensorRT target supports (default: none)",
    )
    p.add_argument(
        "--nms-conf", type=float, help="score threshold baked in (default: sidecar deploy)"
    )
    p.add_argument("--nms-iou", type=float, help="IoU threshold baked in (default: sidecar deploy)")
    p.add_argument("--nms-max-det", type=int, help="K, boxes kept per image (default: deploy)")
    p.add_argument("--nms-topk", type=int, help="candidates per image into NMS (default: deploy)")
    p.add_argument("--no-sidecar", action="store_true", help="build the engine only")
    return p


def _profile_from_args(args: argparse.Namespace, onnx_path: Path) -> Shapes:
    given = [args.min_shapes, args.opt_shapes, args.max_shapes]
    if all(given):
        mins, opts, maxs = (parse_shapes(s) for s in given)
        if not set(mins) == set(opts) == set(maxs):
            raise EngineBuildError("--min-shapes, --opt-shapes and --max-shapes name other inputs")
        return {n: (mins[n], opts[n], maxs[n]) for n in mins}
    if any(given):
        raise EngineBuildError("give all of --min-shapes, --opt-shapes, --max-shapes, or none")
    side = onnx_path.with_name(onnx_path.name + ".json")
    if not side.is_file():
        raise EngineBuildError(f"no sidecar {side} to read the input shape from; pass --*-shapes")
    data = json.loads(side.read_text(encoding="utf-8"))
    inp, b = data["input"], data["batch"]
    dims = tuple(int(d) for d in inp["shape"][1:])
    lo, opt, hi = ((int(b[k]), *dims) for k in ("min", "opt", "max"))
    return {inp["name"]: (lo, opt, hi)}


def build_from_args(argv: list[str], base: Path) -> list[Path]:
    """Build as the command line asks; relative paths are relative to `base`. Returns the files
    written (engine, then sidecar)."""
    args = _parser().parse_args(argv)
    onnx_path = base / args.onnx
    if not onnx_path.is_file():
        raise EngineBuildError(f"ONNX {onnx_path} does not exist; pass the .onnx mtc-export wrote")
    stem = onnx_path.stem.removesuffix(f"_{args.precision}")  # student_fp16.onnx -> student_fp16
    default = onnx_path.with_name(f"{stem}_{args.precision}.engine")
    engine = base / args.engine if args.engine else default
    shapes = _profile_from_args(args, onnx_path)
    onnx_sidecar = onnx_path.with_name(onnx_path.name + ".json")
    if not args.no_sidecar and not onnx_sidecar.is_file():  # fail before the minutes of building
        raise EngineBuildError(
            f"no sidecar {onnx_sidecar}: the engine's sidecar (what mtc-run needs) is made from "
            "it; copy the whole export folder, or pass --no-sidecar to build the engine alone"
        )
    int8_side, calib = _int8_from_args(args, onnx_path, base)
    trt = import_tensorrt()
    nms = _nms_from_args(trt, args, onnx_sidecar)
    gpu = query_gpu_name()
    cache_dir = os.environ.get("MTC_TIMING_CACHE") or args.cache_dir or default_timing_cache_dir()
    cache = timing_cache_file(base / cache_dir, gpu, str(trt.__version__))
    plan, info = build_serialized_engine(
        onnx_path.read_bytes(),
        precision=args.precision,
        input_shapes=shapes,
        workspace_mib=args.workspace,
        opt_level=args.opt_level,
        timing_cache=cache,
        trt=trt,
        fp16_path=None if args.fp16_path == "auto" else args.fp16_path,
        dla_core=args.dla_core,
        gpu=gpu,
        nms=nms,
        calib_cache=calib,
    )
    written = [atomic_write_bytes(engine, plan)]
    if not args.no_sidecar:
        batch = batch_range(shapes)
        side = write_engine_sidecar(
            engine,
            onnx_path,
            precision=args.precision,
            info=info,
            batch=batch,
            int8_sidecar=int8_side,
        )
        written.append(side)
    return written


def _int8_from_args(
    args: argparse.Namespace, onnx_path: Path, base: Path
) -> tuple[Path | None, bytes | None]:
    """(sidecar with the `int8` block, calibration cache bytes for DLA), checked before the
    build. The cache is the one `--calib` names, else the one the INT8 ONNX's sidecar names."""
    if args.precision != "int8":
        if args.calib is not None:
            raise EngineBuildError("--calib is for --precision int8 --dla-core only")
        return None, None
    side = int8_sidecar_for(onnx_path)
    if not args.no_sidecar and not side.is_file():
        raise EngineBuildError(
            f"no sidecar {side}: an INT8 engine's sidecar carries its 'int8' block; copy the "
            "whole export folder (made with mtc-export --int8), or pass --no-sidecar"
        )
    if args.dla_core is None:
        if args.calib is not None:
            raise EngineBuildError(
                "--calib is for the DLA build (implicit INT8); the Q/DQ ONNX carries its scales"
            )
        return side, None
    calib = base / args.calib if args.calib is not None else None
    if calib is None and side.is_file():
        name = (_read_json(side, None).get("int8") or {}).get("calib_cache")
        calib = onnx_path.with_name(name) if name else None
    if calib is None or not calib.is_file():
        what = f"{calib} does not exist" if calib else f"{side} names none"
        raise EngineBuildError(
            f"--precision int8 --dla-core needs the calibration cache ({what}); pass --calib "
            "<name>_int8.calib (mtc-export --int8 writes it beside the ONNX)"
        )
    return side, calib.read_bytes()


def _nms_from_args(trt: Any, args: argparse.Namespace, onnx_sidecar: Path) -> NmsSpec | None:
    kind = resolve_nms_kind(trt, args.trt_nms)
    if kind is None:
        return None
    if not onnx_sidecar.is_file():
        raise EngineBuildError(f"--trt-nms reads the classes and thresholds from {onnx_sidecar}")
    side = json.loads(onnx_sidecar.read_text(encoding="utf-8"))
    overrides = {
        "conf_thres": args.nms_conf,
        "iou_thres": args.nms_iou,
        "max_det": args.nms_max_det,
        "topk": args.nms_topk,
    }
    return nms_spec_from_sidecar(side, kind, overrides)


def main(argv: list[str] | None = None) -> int:
    shipped = bool(SHIPPED_ARGS)
    base = Path(__file__).resolve().parent if shipped else Path.cwd()
    args = SHIPPED_ARGS + list(sys.argv[1:] if argv is None else argv)
    try:
        written = build_from_args(args, base)
    except (TensorRTUnavailableError, EngineBuildError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("wrote " + " and ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
