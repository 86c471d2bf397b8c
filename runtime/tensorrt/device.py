"""TensorRT and the device it builds for: importing TensorRT (with the install hint when it is
not there), its version, the GPU's name and the timing cache file for (GPU, TensorRT version)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from runtime.tensorrt.errors import TensorRTUnavailableError

INSTALL_HINT = (
    "install TensorRT's Python package on the machine that will run the engine: desktop GPUs "
    "`pip install tensorrt` (NVIDIA's wheels; tensorrt-cu12 for CUDA 12), Jetson JetPack "
    "`sudo apt install python3-libnvinfer` (venv with --system-site-packages)"
)


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
