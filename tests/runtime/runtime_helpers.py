"""Shared helpers for the runtime tests (plain functions, not fixtures: tests/runtime has no conftest
of ours, so other test files here stay independent)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1] / "fakes"))  # the TensorRT fake
from cuda_memory_fake import FakeMemory, install_fake_tensorrt  # noqa: E402
from tensorrt_fake import FakeGpu, make_fake_tensorrt  # noqa: E402, F401 (re-exported)

from runtime.sidecar import BatchRange  # noqa: E402
from runtime.tensorrt.builder import build_serialized_engine  # noqa: E402
from runtime.tensorrt.engine_sidecar import write_engine_sidecar  # noqa: E402
from runtime.testing import StandinConfig, build_standin_onnx, standin_sidecar  # noqa: E402

FAKE_TRT_VERSION = "10.3.0"  # what install_fake_trt installs

HW = (32, 64)  # network input of the stand-ins


def make_artifact(tmp_path: Path, name: str = "model.onnx", **kw: Any) -> Path:
    cfg = StandinConfig(input_hw=kw.pop("input_hw", HW), **kw)
    path = build_standin_onnx(tmp_path / name, cfg)
    standin_sidecar(path, cfg)
    return path


def split_frame(h: int = 48, w: int = 80, value: int = 200) -> np.ndarray:
    """BGR frame: left half bright (mask = 1 in the stand-ins), right half black (mask = 0)."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2] = value
    return img


def install_fake_trt(monkeypatch: Any) -> list[FakeMemory]:
    """Install the fake TensorRT (FAKE_TRT_VERSION) and fake device memory; returns the memory
    adapters the code under test makes."""
    return install_fake_tensorrt(monkeypatch, FAKE_TRT_VERSION).memories


def make_fake_engine(
    tmp_path: Path,
    profile: tuple[int, int, int] = (1, 2, 4),
    plan_version: str = FAKE_TRT_VERSION,
    hw: tuple[int, int] = HW,
    rows: int = 8,
    name: str = "model.engine",
) -> Path:
    """The stand-in ONNX (det [B, rows, 6], uint8 masks = channel > 0) built into a fake FP16
    engine by `plan_version` of the fake TensorRT through mtc's builder, with its sidecar."""
    cfg = StandinConfig(input_hw=hw, num_candidates=rows, batch=BatchRange(*profile))
    onnx_path = build_standin_onnx(tmp_path / f"{Path(name).stem}_source.onnx", cfg)
    standin_sidecar(onnx_path, cfg)
    shapes = tuple((b, 3, *hw) for b in profile)
    plan, info = build_serialized_engine(
        onnx_path.read_bytes(),
        precision="fp16",
        input_shapes={"images": shapes},  # type: ignore[dict-item]
        trt=make_fake_tensorrt(plan_version),
        gpu="Orin (sidecar)",
    )
    path = tmp_path / name
    path.write_bytes(plan)
    batch = {"min": profile[0], "opt": profile[1], "max": profile[2]}
    write_engine_sidecar(path, onnx_path, precision="fp16", info=info, batch=batch)
    return path
