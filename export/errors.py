"""Named export errors. Each is a user-fixable condition: the CLI prints it as one line and exits
2. Messages say what was received, what was expected and how to fix it."""

from __future__ import annotations

from typing import Any

from runtime.cli_kernel import OutputPathError as _OutputPathError
from runtime.errors import MtcError


class ExportError(MtcError):
    """Base of every export failure. `result`: what was written anyway (an `ExportResult`),
    where the export stops short of one artifact only (no TensorRT for the engine, no INT8
    layer choice within the budgets); None otherwise."""

    def __init__(self, *args: Any, result: Any = None) -> None:
        super().__init__(*args)
        self.result = result


class ExportConfigError(ExportError):
    """An option value that cannot work (size not divisible by the stride, batch range, ...)."""


class OutputPathError(ExportError, _OutputPathError):
    """The output folder cannot be created or written."""


class OnnxExportError(ExportError):
    """torch.onnx.export failed or produced a graph that does not load."""


class SimplifierError(ExportError):
    """The chosen simplifier is missing or failed; never reduced to a warning."""


class ParityError(ExportError):
    """ONNX Runtime disagrees with PyTorch beyond the per-output tolerances."""


class Fp16Error(ExportError):
    """The FP16 ONNX could not be made or agrees too little with FP32."""


class LintError(ExportError):
    """The ONNX would not parse in the target TensorRT (unsupported op, dynamic shape, opset)."""


class TensorRTUnavailableError(ExportError):
    """An engine was asked for where TensorRT (or a CUDA device) is not installed."""


class EngineBuildError(ExportError):
    """TensorRT was present but parsing or building the engine failed."""


class Int8Error(ExportError):
    """The INT8 ONNX could not be calibrated, or no choice of layers meets the task budgets."""
