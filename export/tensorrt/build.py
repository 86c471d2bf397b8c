"""Hop 3, the export's engine stage: ONNX -> serialized TensorRT engine. The build itself is
`runtime.tensorrt.builder` (torch-free; bundled beside the ONNX as the device build script);
this file decides what the export feeds it: which ONNX (FP32, or FP16 on the strongly typed
path; for INT8 the Q/DQ ONNX, or on DLA the FP32 ONNX + the calibration cache), the profile from
the batch range, the NMS from the sidecar, and the timing cache file for this (GPU, TensorRT
version); the runtime's build errors become the export's. CPU tests drive it through the fake in
`tests/fakes/tensorrt_fake.py` installed as the `tensorrt` module."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from export.errors import EngineBuildError, TensorRTUnavailableError
from runtime.tensorrt import device, errors
from runtime.tensorrt.builder import BuildInfo, Shapes, build_serialized_engine, fp16_path_for
from runtime.tensorrt.device import query_gpu_name, timing_cache_file
from runtime.tensorrt.nms import NmsSpec, nms_spec_from_sidecar, resolve_nms_kind
from runtime.tensorrt.targets import FP16_BUILDER_FLAG


@dataclass(frozen=True)
class EngineBuildConfig:
    precision: str  # "fp16" | "fp32" | "int8"
    input_name: str
    input_chw: tuple[int, int, int]
    min_batch: int
    opt_batch: int
    max_batch: int
    workspace_mib: int
    opt_level: int
    timing_cache_dir: Path
    dla_core: int | None = None
    trt_nms: str = "none"  # runtime.tensorrt.targets.TRT_NMS_CHOICES

    def input_shapes(self) -> Shapes:
        lo, opt, hi = (
            (b, *self.input_chw) for b in (self.min_batch, self.opt_batch, self.max_batch)
        )
        return {self.input_name: (lo, opt, hi)}


@dataclass(frozen=True)
class BuiltEngine:
    plan: bytes
    version: str
    gpu: str
    source: str  # "fp32_onnx" | "fp16_onnx" | "int8_onnx": which ONNX was parsed
    fp16_path: str | None
    build_flags: tuple[str, ...]
    timing_cache: str | None
    dla_core: int | None
    nms: NmsSpec | None = None
    nms_rows: int = 0
    int8_path: str | None = None
    dla_gpu_layers: tuple[str, ...] | None = None

    @property
    def info(self) -> BuildInfo:
        return BuildInfo(
            self.version,
            self.gpu,
            self.build_flags,
            self.fp16_path,
            self.timing_cache,
            self.dla_core,
            self.nms,
            self.nms_rows,
            self.int8_path,
            self.dla_gpu_layers,
        )


def import_tensorrt() -> Any:
    try:
        return device.import_tensorrt()
    except errors.TensorRTUnavailableError as e:
        raise TensorRTUnavailableError(str(e)) from None


class EngineFromOnnx:
    """Lazy: calling builds and returns a `BuiltEngine`. The ONNX loaders return bytes; the
    FP16 one is only read on the strongly typed FP16 path, the INT8 (Q/DQ) one for an INT8
    engine off the DLA, `calib_cache` (the calibration cache's bytes) for one on the DLA.
    `sidecar` (the FP32 ONNX's, as a dict) is read only with `cfg.trt_nms`: classes and deploy
    thresholds to bake in."""

    def __init__(
        self,
        onnx_fp32: Callable[[], bytes],
        onnx_fp16: Callable[[], bytes] | None,
        cfg: EngineBuildConfig,
        gpu_name: Callable[[], str] = query_gpu_name,
        sidecar: Callable[[], dict[str, Any]] | None = None,
        onnx_int8: Callable[[], bytes] | None = None,
        calib_cache: Callable[[], bytes] | None = None,
    ):
        self.onnx_fp32, self.onnx_fp16, self.cfg, self.gpu_name = (
            onnx_fp32,
            onnx_fp16,
            cfg,
            gpu_name,
        )
        self.sidecar = sidecar
        self.onnx_int8, self.calib_cache = onnx_int8, calib_cache

    def _nms(self, trt: Any) -> NmsSpec | None:
        kind = resolve_nms_kind(trt, self.cfg.trt_nms)
        if kind is None:
            return None
        if self.sidecar is None:
            raise EngineBuildError("--trt-nms needs the ONNX's sidecar (classes, thresholds)")
        return nms_spec_from_sidecar(self.sidecar(), kind)

    def _int8_source(self) -> tuple[bytes, str, bytes | None]:
        if self.cfg.dla_core is not None:  # implicit quantisation: FP32 ONNX + the cache
            if self.calib_cache is None:
                raise EngineBuildError(
                    "--engine int8 --dla-core needs the calibration cache that --int8 writes "
                    "(<name>_int8.calib); export with --int8"
                )
            return self.onnx_fp32(), "fp32_onnx", self.calib_cache()
        if self.onnx_int8 is None:
            raise EngineBuildError(
                "--engine int8 builds from the INT8 (Q/DQ) ONNX, and none was made; add --int8 "
                "--calib-data DIR"
            )
        return self.onnx_int8(), "int8_onnx", None

    def _source(self, trt: Any) -> tuple[bytes, str, str | None]:
        if self.cfg.precision != "fp16":
            return self.onnx_fp32(), "fp32_onnx", None
        path = fp16_path_for(trt)
        if path == FP16_BUILDER_FLAG:
            return self.onnx_fp32(), "fp32_onnx", path
        if self.onnx_fp16 is None:
            raise EngineBuildError(
                f"TensorRT {trt.__version__} builds FP16 only from an FP16 ONNX (strongly "
                "typed), and none was made; drop --no-fp16-onnx"
            )
        return self.onnx_fp16(), "fp16_onnx", path

    def __call__(self) -> BuiltEngine:
        trt = import_tensorrt()
        cfg = self.cfg
        try:
            nms = self._nms(trt)
        except errors.EngineBuildError as e:
            raise EngineBuildError(str(e)) from None
        calib = None
        if cfg.precision == "int8":
            data, source, calib = self._int8_source()
            fp16_path = None
        else:
            data, source, fp16_path = self._source(trt)
        gpu = self.gpu_name()
        try:
            plan, info = build_serialized_engine(
                data,
                precision=cfg.precision,
                input_shapes=cfg.input_shapes(),
                workspace_mib=cfg.workspace_mib,
                opt_level=cfg.opt_level,
                timing_cache=timing_cache_file(cfg.timing_cache_dir, gpu, str(trt.__version__)),
                trt=trt,
                fp16_path=fp16_path,
                dla_core=cfg.dla_core,
                gpu=gpu,
                nms=nms,
                calib_cache=calib,
            )
        except errors.TensorRTUnavailableError as e:
            raise TensorRTUnavailableError(str(e)) from None
        except errors.EngineBuildError as e:
            raise EngineBuildError(str(e)) from None
        return BuiltEngine(
            plan,
            info.version,
            info.gpu,
            source,
            info.fp16_path,
            info.build_flags,
            info.timing_cache,
            info.dla_core,
            info.nms,
            info.nms_rows,
            info.int8_path,
            info.dla_gpu_layers,
        )
