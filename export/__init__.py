"""mtc export: checkpoint -> verified ONNX -> FP16 ONNX -> TensorRT engine, each with a sidecar.

The hops are folders: `onnx/` (torch -> ONNX, simplify), `fp16/` (FP16 ONNX), `tensorrt/` (lint,
engine build, build scripts), `checks/` (parity, read-back through the runtime); `pipeline.py`
orders the `stages` over one `ExportRun`.

`export_model` and the config classes resolve on first use, so the torch-free parts (the config,
`export.tensorrt.build`) import on a Jetson image without torch, and a base install without the
export extra gets one line naming it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from export.config import ExportConfig, Fp16Thresholds, ParityTolerances
    from export.pipeline import ExportResult, export_model

__all__ = ["ExportConfig", "ExportResult", "Fp16Thresholds", "ParityTolerances", "export_model"]
_CONFIG = ("ExportConfig", "Fp16Thresholds", "ParityTolerances")


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'export' has no attribute {name!r}")
    from runtime.cli_kernel import EXTRAS, missing_extra

    try:
        if name in _CONFIG:
            from export import config

            return getattr(config, name)
        from export import pipeline

        return getattr(pipeline, name)
    except ModuleNotFoundError as e:  # the base install: name the extra to install
        if (e.name or "").split(".")[0] not in EXTRAS:
            raise
        raise missing_extra(e, f"export.{name}") from None
