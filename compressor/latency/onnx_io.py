"""A model's eval forward as ONNX at a fixed batch: what latency probes are cut from and what
whole-model latencies are measured on. Outputs are flattened in a fixed order (dict keys
sorted), so any multi-task model exports the same way."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from runtime.errors import MtcError

INPUT_NAME = "images"
WRAPPER_PREFIX = "model"
OPSET = 17


class LatencyExportError(MtcError):
    """The model could not be exported to ONNX for latency measurement."""


def import_onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise LatencyExportError(
            "the latency target needs onnx and onnxruntime: pip install 'mtc[export]'"
        ) from None
    return onnx


def _flatten(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for k in sorted(out) for t in _flatten(out[k])]
    if isinstance(out, list | tuple):
        return [t for v in out for t in _flatten(v)]
    return []


class _Flat(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model  # attribute name = WRAPPER_PREFIX: node names start with /model/

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(_flatten(self.model(x)))


def export_onnx(model: nn.Module, input_hw: tuple[int, int], batch: int, in_channels: int = 3):
    """ONNX ModelProto of `model` in eval mode (BN folded into convs, as a deploy export does)."""
    onnx = import_onnx()
    was = model.training
    ref = next(model.parameters(), torch.zeros(()))
    x = torch.zeros(batch, in_channels, *input_hw, dtype=ref.dtype)
    try:
        model.eval()
        with torch.no_grad(), warnings.catch_warnings(), tempfile.TemporaryDirectory() as d:
            warnings.simplefilter("ignore")
            path = Path(d) / "m.onnx"
            torch.onnx.export(
                _Flat(model),
                (x,),
                str(path),
                input_names=[INPUT_NAME],
                opset_version=OPSET,
                do_constant_folding=True,
                dynamo=False,
            )
            return onnx.load_from_string(path.read_bytes())
    except Exception as e:  # the tracer raises many types
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise LatencyExportError(
            f"cannot export {type(model).__name__} to ONNX for latency measurement: {first}"
        ) from None
    finally:
        model.train(was)
