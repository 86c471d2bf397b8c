"""The TensorRT build's errors. MtcErrors, so every CLI (mtc-export, `python -m runtime.tensorrt`,
the device build script) prints them as one line and exits 2."""

from __future__ import annotations

from runtime.errors import MtcError


class TensorRTUnavailableError(MtcError):
    """TensorRT (or a CUDA device it can use) is not there."""


class EngineBuildError(MtcError):
    """TensorRT is there, but parsing, configuring or building the engine failed."""


class CalibrationCacheError(MtcError):
    """A calibration cache that cannot be written or read as TensorRT's text format."""
