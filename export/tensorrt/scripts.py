"""Ready-to-run engine builds for the target machine: a `trtexec` command line and the Python build
script (`runtime/tensorrt`'s modules bundled into one file with this export's arguments: TensorRT
only, no torch, no mtc needed). Written on every export, so a CPU workstation can hand the ONNX to a Jetson and the
build there is one command."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from export.errors import ExportError
from export.tensorrt.build import EngineBuildConfig
from runtime.fileio import atomic_write_text
from runtime.tensorrt.bundle import BundleError, bundle_script
from runtime.tensorrt.targets import FP16_STRONGLY_TYPED, get_target

# The export machine is usually not the target, so the scripts find the timing cache folder and
# the GPU name where they run; the file name scheme matches `device.timing_cache_file`.
DEFAULT_SCRIPT_CACHE_DIR = "${XDG_CACHE_HOME:-$HOME/.cache}/mtc/tensorrt_timing"


@dataclass(frozen=True)
class EnginePlan:
    """What to build on the target: which ONNX, which engine file, which FP16 path; for INT8
    the Q/DQ ONNX, or on the DLA the FP32 ONNX + the calibration cache `calib`."""

    onnx: str  # file name next to the script
    engine: str
    target: str  # a name in runtime/tensorrt/targets.py
    fp16_path: str | None
    cache_dir: str | None  # None: the per-user default on the target
    trt_nms: str = "none"  # NMS the Python build script appends (trtexec cannot)
    int8: bool = False
    calib: str | None = None  # the calibration cache beside the script (DLA INT8 only)

    @property
    def engine_precision(self) -> str:
        return "int8" if self.int8 else "fp16" if self.fp16_path else "fp32"


def plan_for_target(
    name: str,
    precision: str,
    target: str,
    has_fp16_onnx: bool,
    cache_dir: str | None,
    trt_nms: str | None = None,
    dla: bool = False,
    calib: str | None = None,
) -> EnginePlan:
    fp16_path = get_target(target).fp16_path if precision == "fp16" else None
    use_fp16_onnx = fp16_path == FP16_STRONGLY_TYPED and has_fp16_onnx
    onnx = f"{name}_fp16.onnx" if use_fp16_onnx else f"{name}.onnx"
    int8 = precision == "int8"
    if int8 and not dla:
        onnx, calib = f"{name}_int8.onnx", None
    return EnginePlan(
        onnx,
        f"{name}_{precision}.engine",
        target,
        fp16_path,
        cache_dir,
        trt_nms or "none",
        int8,
        calib if int8 else None,
    )


def _shape(cfg: EngineBuildConfig, batch: int) -> str:
    return f"{cfg.input_name}:" + "x".join(str(v) for v in (batch, *cfg.input_chw))


def trtexec_command(plan: EnginePlan, cfg: EngineBuildConfig) -> list[str]:
    cmd = ["trtexec", f"--onnx={plan.onnx}", f"--saveEngine={plan.engine}"]
    target = get_target(plan.target)
    if plan.fp16_path:
        cmd += target.trtexec_fp16
    if plan.int8 and plan.calib:  # DLA: implicit quantisation from the calibration cache
        cmd += ["--int8", "--fp16", f"--calib={plan.calib}"]
    elif plan.int8:
        cmd += target.trtexec_int8
    cmd += [
        f"--minShapes={_shape(cfg, cfg.min_batch)}",
        f"--optShapes={_shape(cfg, cfg.opt_batch)}",
        f"--maxShapes={_shape(cfg, cfg.max_batch)}",
        f"--memPoolSize=workspace:{cfg.workspace_mib}M",
        f"--builderOptimizationLevel={cfg.opt_level}",
        f"--timingCacheFile=$CACHE_DIR/timing_${{SLUG}}_trt{plan.target}.cache",
    ]
    if cfg.dla_core is not None:
        cmd += [f"--useDLACore={cfg.dla_core}", "--allowGPUFallback"]
    return cmd


def _quote(arg: str) -> str:
    """Quote for sh but keep $CACHE_DIR / ${SLUG} expandable."""
    if "$" in arg:
        return '"' + arg.replace('"', '\\"') + '"'
    return shlex.quote(arg)


def write_trtexec_script(path: Path, plan: EnginePlan, cfg: EngineBuildConfig) -> Path:
    line = " ".join(_quote(c) for c in trtexec_command(plan, cfg))
    cache_dir = plan.cache_dir or DEFAULT_SCRIPT_CACHE_DIR
    nms = (
        f"# Without NMS: trtexec cannot append it; the Python script adds --trt-nms {plan.trt_nms}.\n"
        if plan.trt_nms != "none"
        else ""
    )
    text = (
        "#!/bin/sh\n"
        f"# Build {plan.engine} on the target (TensorRT {plan.target}). The engine is tied to\n"
        "# the GPU and TensorRT version it is built with. The runtime also needs the sidecar:\n"
        f"# run the Python script beside this file instead to get {plan.engine}.json too.\n"
        f"{nms}"
        'set -e\ncd "$(dirname "$0")"\n'
        f'CACHE_DIR="${{MTC_TIMING_CACHE:-{cache_dir}}}"\n'
        'GPU="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)"\n'
        '[ -n "$GPU" ] || GPU="$(tr -d \'\\000\' < /proc/device-tree/model 2>/dev/null || true)"\n'
        "SLUG=\"$(printf '%s' \"${GPU:-gpu}\" | tr -cs 'A-Za-z0-9' '-' | tr 'A-Z' 'a-z' "
        "| sed 's/^-*//; s/-*$//')\"\n"
        'mkdir -p "$CACHE_DIR"\n'
        f"{line}\n"
    )
    atomic_write_text(path, text)
    path.chmod(0o755)
    return path


def build_script_args(plan: EnginePlan, cfg: EngineBuildConfig) -> list[str]:
    """The `python -m runtime.tensorrt` command line that builds `plan` (paths beside the script)."""
    args = [plan.onnx, "--engine", plan.engine, "--precision", plan.engine_precision]
    if plan.fp16_path:
        args += ["--fp16-path", plan.fp16_path]
    for flag, batch in (("--min-shapes", cfg.min_batch), ("--opt-shapes", cfg.opt_batch)):
        args += [flag, _shape(cfg, batch)]
    args += ["--max-shapes", _shape(cfg, cfg.max_batch)]
    args += ["--workspace", str(cfg.workspace_mib), "--opt-level", str(cfg.opt_level)]
    if plan.cache_dir:
        args += ["--cache-dir", plan.cache_dir]
    if cfg.dla_core is not None:
        args += ["--dla-core", str(cfg.dla_core)]
    if plan.calib:
        args += ["--calib", plan.calib]
    if plan.trt_nms != "none":
        args += ["--trt-nms", plan.trt_nms]
    return args


def write_build_script(path: Path, plan: EnginePlan, cfg: EngineBuildConfig) -> Path:
    """The device build script: runtime.tensorrt's modules bundled into one file
    (`runtime.tensorrt.bundle`) with this build's arguments in its SHIPPED_ARGS: the same builder
    and sidecar code as mtc-export, and it needs TensorRT only."""
    header = (
        f"# Generated by mtc-export: builds {plan.engine} (+ its sidecar) from {plan.onnx} on the\n"
        f"# target (TensorRT {plan.target}). mtc's runtime/tensorrt modules in one file, with the\n"
        "# build's arguments at the end; extra arguments override them (see --help). Needs\n"
        "# TensorRT only.\n"
    )
    try:
        text = bundle_script(build_script_args(plan, cfg), header)
    except BundleError as e:  # a module of runtime/tensorrt broke the bundling rules
        raise ExportError(f"cannot write the device build script {path.name}: {e}") from None
    atomic_write_text(path, text)
    path.chmod(0o755)
    return path
