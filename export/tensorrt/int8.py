"""The INT8 engine's inputs and its check, for the export's engine stage: the Q/DQ ONNX
(`<name>_int8.onnx`, from `mtc-export --int8`) and the calibration cache its sidecar names
(`<name>_int8.calib`, for the DLA build), and the engine checked against that INT8 ONNX run in
ONNX Runtime. The reference is the INT8 ONNX, not the FP32 one: both quantise the same tensors
with the same scales, so what is left between them is kernels, fusions and (10.x) FP16 in the
layers outside Q/DQ; the INT8 ONNX's own distance from FP32 is the --int8 guard's business."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from export.checks.ort import OrtModel
from export.config import Fp16Thresholds
from export.errors import EngineBuildError
from export.fp16.agreement import Fp16Report, fp16_agreement
from export.onnx.deploy import DeploySpec
from runtime.sidecar import sidecar_path

INT8_SUFFIX = "_int8"
CALIB_SUFFIX = ".calib"


@dataclass(frozen=True)
class Int8Artifacts:
    """Where an export's INT8 ONNX and calibration cache are (they need not exist)."""

    onnx: Path
    calib: Path

    @classmethod
    def beside(cls, out_dir: Path, name: str) -> Int8Artifacts:
        """`<name>_int8.onnx`, and the cache its sidecar's `int8.calib_cache` names (else
        `<name>_int8.calib`)."""
        onnx_path = out_dir / f"{name}{INT8_SUFFIX}.onnx"
        side = sidecar_path(onnx_path)
        named = None
        if side.is_file():
            named = (json.loads(side.read_text(encoding="utf-8")).get("int8") or {}).get(
                "calib_cache"
            )
        return cls(onnx_path, out_dir / (named or f"{name}{INT8_SUFFIX}{CALIB_SUFFIX}"))

    @property
    def sidecar(self) -> Path:
        return sidecar_path(self.onnx)

    def loaders(self) -> tuple[Callable[[], bytes] | None, Callable[[], bytes] | None]:
        """(Q/DQ ONNX bytes, calibration cache bytes) loaders, None for a missing file."""
        onnx_bytes = self.onnx.read_bytes if self.onnx.is_file() else None
        calib = self.calib.read_bytes if self.calib.is_file() else None
        return onnx_bytes, calib

    def require(self) -> None:
        """An INT8 engine is made from these: say so before the build if the export has none."""
        if not self.onnx.is_file() or not self.sidecar.is_file():
            raise EngineBuildError(
                f"--engine int8 builds from {self.onnx.name} (+ its sidecar), which this export "
                "did not write; add --int8 --calib-data DIR"
            )


def int8_engine_agreement(
    engine: Callable[[np.ndarray], dict[str, Any]],
    int8_onnx: Path,
    cases: list[tuple[str, np.ndarray]],
    spec: DeploySpec,
    thresholds: Fp16Thresholds,
) -> Fp16Report:
    """The INT8 engine (a runner: images -> outputs) against the INT8 ONNX in ONNX Runtime CPU,
    on the probe inputs, by the decision measures of the FP16 check (mask agreement, matched
    box IoU, score delta) and its thresholds."""
    ref = OrtModel(onnx.load(str(int8_onnx)))
    return fp16_agreement(ref, engine, cases, spec, thresholds)


def require_int8_engine_agreement(report: Fp16Report, int8_onnx: Path) -> None:
    if not report.ok:
        raise EngineBuildError(
            f"the INT8 engine disagrees with {int8_onnx.name} in ONNX Runtime: "
            f"{'; '.join(report.failures)}; the engine is not kept. Rebuild on the target with "
            "its build script and compare there, or loosen --fp16-* thresholds deliberately"
        )
