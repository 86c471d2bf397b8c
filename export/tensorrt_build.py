"""Stage 6: ONNX -> serialized TensorRT engine. Every `tensorrt` import of the export lives in
this file, behind `import_tensorrt()` and `EngineFromOnnx`, so CPU tests drive the real logic
through `tests/export/fake_tensorrt.py` installed as the `tensorrt` module.

FP16 by installed version (never silently FP32):
- TensorRT 10.x: weakly typed network from the FP32 ONNX + `BuilderFlag.FP16`, after checking
  `platform_has_fast_fp16`  -> fp16_path "builder_flag".
- TensorRT 11.x (no `BuilderFlag.FP16`): strongly typed network from the FP16 ONNX, whose own
  tensor types carry the precision  -> fp16_path "strongly_typed_fp16_onnx".
Timing cache: one file per (GPU name, TensorRT version), loaded before and saved (atomically)
after every build, so rebuilds on the same device skip most tactic timing."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from export.errors import EngineBuildError, TensorRTUnavailableError
from runtime.fileio import atomic_write_bytes

FP16_BUILDER_FLAG = "builder_flag"
FP16_STRONGLY_TYPED = "strongly_typed_fp16_onnx"
INSTALL_HINT = (
    "install TensorRT's Python package on the machine that will run the engine: desktop GPUs "
    "`pip install tensorrt` (NVIDIA's wheels; tensorrt-cu12 for CUDA 12), Jetson JetPack "
    "`sudo apt install python3-libnvinfer` (venv with --system-site-packages)"
)


@dataclass(frozen=True)
class EngineBuildConfig:
    precision: str  # "fp16" | "fp32"
    input_name: str
    input_chw: tuple[int, int, int]
    min_batch: int
    opt_batch: int
    max_batch: int
    workspace_mib: int
    opt_level: int
    timing_cache_dir: Path
    dla_core: int | None = None


@dataclass(frozen=True)
class BuiltEngine:
    plan: bytes
    version: str
    gpu: str
    source: str  # "fp32_onnx" | "fp16_onnx": which ONNX was parsed
    fp16_path: str | None
    build_flags: tuple[str, ...]
    timing_cache: str | None
    dla_core: int | None


def import_tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError:
        raise TensorRTUnavailableError(f"TensorRT is not installed; {INSTALL_HINT}") from None
    return tensorrt


def trt_major(trt: Any) -> int:
    return int(str(trt.__version__).split(".")[0])


def fp16_path_for(trt: Any) -> str:
    """10.x keeps the weakly typed FP16 flag; 11.x removed it, so only strongly typed works."""
    if trt_major(trt) >= 11 or not hasattr(trt.BuilderFlag, "FP16"):
        return FP16_STRONGLY_TYPED
    return FP16_BUILDER_FLAG


def query_gpu_name() -> str:
    """GPU 0's name via the runtime's CUDA adapter, else nvidia-smi; keys the timing cache."""
    try:
        from runtime.backends.cuda_memory import create_memory

        mem = create_memory("auto")
        try:
            return mem.device_name()
        finally:
            mem.close()
    except Exception:  # no bindings / no driver: try the CLI next
        pass
    exe = shutil.which("nvidia-smi")
    if exe:
        out = subprocess.run(
            [exe, "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip().splitlines()[0]
    return "unknown-gpu"


def timing_cache_file(cache_dir: Path, gpu: str, version: str) -> Path:
    """Tactic timings are only valid for one device and one TensorRT version."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", gpu).strip("-").lower() or "gpu"
    return Path(cache_dir) / f"timing_{slug}_trt{version}.cache"


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
    trt: Any, builder: Any, cfg: EngineBuildConfig, fp16_flag: bool
) -> tuple[Any, list[str]]:
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, cfg.workspace_mib << 20)
    config.builder_optimization_level = cfg.opt_level
    flags = [f"workspace={cfg.workspace_mib}MiB", f"opt_level={cfg.opt_level}"]
    if fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)
        flags.append("FP16")
    profile = builder.create_optimization_profile()
    shapes = [(b, *cfg.input_chw) for b in (cfg.min_batch, cfg.opt_batch, cfg.max_batch)]
    profile.set_shape(cfg.input_name, *shapes)
    config.add_optimization_profile(profile)
    flags.append(f"profile={cfg.min_batch}/{cfg.opt_batch}/{cfg.max_batch}")
    if cfg.dla_core is not None:
        flags += _use_dla(trt, builder, config, cfg.dla_core)
    return config, flags


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


def _attach_timing_cache(config: Any, path: Path) -> bool:
    data = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(data)
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        raise EngineBuildError(
            f"TensorRT rejected the timing cache {path} (corrupt or from another device / "
            "version); delete it and build again"
        )
    return bool(data)


def _save_timing_cache(config: Any, path: Path) -> None:
    atomic_write_bytes(path, bytes(config.get_timing_cache().serialize()))


class EngineFromOnnx:
    """Lazy: calling builds and returns a `BuiltEngine`. The ONNX loaders return bytes; the
    FP16 one is only read on the strongly typed FP16 path."""

    def __init__(
        self,
        onnx_fp32: Callable[[], bytes],
        onnx_fp16: Callable[[], bytes] | None,
        cfg: EngineBuildConfig,
        gpu_name: Callable[[], str] = query_gpu_name,
    ):
        self.onnx_fp32, self.onnx_fp16, self.cfg, self.gpu_name = (
            onnx_fp32,
            onnx_fp16,
            cfg,
            gpu_name,
        )

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
        logger = trt.Logger(trt.Logger.WARNING)
        try:
            builder = trt.Builder(logger)
        except Exception as e:  # no CUDA device / driver: TensorRT raises from its factory
            raise TensorRTUnavailableError(
                f"TensorRT {trt.__version__} is installed but cannot create a builder ({e}); "
                "an engine needs an NVIDIA GPU with a working driver"
            ) from None
        data, source, fp16_path = self._source(trt)
        if fp16_path == FP16_BUILDER_FLAG and not getattr(builder, "platform_has_fast_fp16", True):
            raise EngineBuildError(
                "--engine fp16 asked for, but this GPU has no fast FP16; use --engine fp32"
            )
        strongly = fp16_path == FP16_STRONGLY_TYPED
        network, _parser = _network(trt, builder, logger, data, strongly)
        config, flags = _builder_config(trt, builder, self.cfg, fp16_path == FP16_BUILDER_FLAG)
        if strongly:
            flags.append("STRONGLY_TYPED")
        gpu, version = self.gpu_name(), str(trt.__version__)
        cache = timing_cache_file(self.cfg.timing_cache_dir, gpu, version)
        _attach_timing_cache(config, cache)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise EngineBuildError(
                f"TensorRT {version} build_serialized_network returned None on {gpu}; the "
                "TensorRT log above says why (often: workspace too small, try --workspace 8192)"
            )
        _save_timing_cache(config, cache)
        return BuiltEngine(
            bytes(plan),
            version,
            gpu,
            source,
            fp16_path,
            tuple(flags),
            str(cache),
            self.cfg.dla_core,
        )


def installed_version() -> str | None:
    """TensorRT's version if its Python package imports here, else None (never raises)."""
    try:
        import tensorrt
    except Exception:  # ImportError, or a broken install raising OSError on its libraries
        return None
    return str(getattr(tensorrt, "__version__", "unknown"))
