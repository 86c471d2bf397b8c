"""Shared helpers for the runtime tests (plain functions, not fixtures: tests/runtime has no conftest
of ours, so other test files here stay independent)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fake_trt
import numpy as np

from runtime.backends import tensorrt as trt_backend
from runtime.sidecar import (
    BatchRange,
    DetInfo,
    InputInfo,
    ModelInfo,
    PreprocessInfo,
    SegInfo,
    Sidecar,
    TensorInfo,
    TensorRTInfo,
    sidecar_path,
)
from runtime.testing import StandinConfig, build_standin_onnx, standin_sidecar

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


def install_fake_trt(monkeypatch: Any) -> list[fake_trt.FakeMemory]:
    """Route the TensorRT backend to the fake module and fake memory; returns the adapters made."""
    made: list[fake_trt.FakeMemory] = []

    def create(name: str) -> fake_trt.FakeMemory:
        made.append(fake_trt.FakeMemory())
        return made[-1]

    monkeypatch.setattr(trt_backend, "_import_tensorrt", lambda: fake_trt)
    monkeypatch.setattr(trt_backend, "_create_memory", create)
    return made


def make_fake_engine(
    tmp_path: Path,
    profile: tuple[int, int, int] = (1, 2, 4),
    plan_version: str = fake_trt.__version__,
    hw: tuple[int, int] = HW,
    rows: int = 8,
    name: str = "model.engine",
) -> Path:
    h, w = hw
    shape = (-1, 3, h, w)
    prof = tuple((b, 3, h, w) for b in profile)
    path = tmp_path / name
    path.write_bytes(fake_trt.make_plan(shape, prof, rows=rows, version=plan_version))  # type: ignore[arg-type]
    Sidecar.for_artifact(
        path,
        input=InputInfo(shape=shape),
        batch=BatchRange(*profile),
        outputs=(
            TensorInfo("det", (-1, rows, 6), "float32"),
            TensorInfo("drivable", (-1, h, w), "uint8"),
            TensorInfo("lane", (-1, h, w), "uint8"),
        ),
        preprocess=PreprocessInfo(input_hw=hw),
        det=DetInfo(conf_thres=0.25, iou_thres=0.45, max_det=rows),
        seg=SegInfo(),
        precision="fp16",
        tensorrt=TensorRTInfo(version=plan_version, gpu="Orin (sidecar)", fp16_path="builder_flag"),
        model=ModelInfo("standin"),
    ).write(sidecar_path(path))
    return path
