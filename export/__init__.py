"""mtc export: checkpoint -> verified ONNX -> FP16 ONNX -> TensorRT engine, each with a sidecar.

`export_model` and `ExportConfig` resolve on first use, so `export.tensorrt.build` (and the
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

        from runtime.cli_kernel import EXTRAS, missing_extra

        try:
            module = importlib.import_module(_HOMES[name])
        except ModuleNotFoundError as e:  # the base install: name the extra to install
            if (e.name or "").split(".")[0] not in EXTRAS:
                raise
            raise missing_extra(e, f"export.{name}") from None
        return getattr(module, name)
    raise AttributeError(f"module 'export' has no attribute {name!r}")
