"""mtc export: checkpoint -> verified ONNX -> FP16 ONNX -> TensorRT engine, each with a sidecar.

`export_model` and `ExportConfig` resolve on first use, so `export.tensorrt_build` (and the
generated build scripts' logic) can be imported on a torch-free Jetson image."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from export.config import ExportConfig, Fp16Thresholds, ParityTolerances
    from export.pipeline import ExportResult, export_model

__all__ = ["ExportConfig", "ExportResult", "Fp16Thresholds", "ParityTolerances", "export_model"]

_HOMES = {
    "ExportConfig": "export.config",
    "Fp16Thresholds": "export.config",
    "ParityTolerances": "export.config",
    "ExportResult": "export.pipeline",
    "export_model": "export.pipeline",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'export' has no attribute {name!r}")
