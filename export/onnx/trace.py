"""Hop 1: checkpoint or model -> ONNX (in memory).

Exporter choice: the TorchScript exporter (`torch.onnx.export(..., dynamo=False)`). It traces
the deploy wrapper into plain opset-17 nodes one-to-one with the PyTorch ops (Conv, HardSwish,
Resize, ...), honours `dynamic_axes` for the batch axis only, and lets the in-graph NMS be a
single standard `NonMaxSuppression` node through a `symbolic`. The dynamo exporter targets
opset 18+ and decomposes through onnxscript functions whose node patterns change between torch
releases; for a graph that must parse in TensorRT 10.3 the predictable one wins. Whatever it
emits is checked afterwards: ONNX checker, parity on inputs other than the tracing input, and
the TensorRT lint."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from compressor.models.registry import spec_of
from compressor.models.spec import ModelSpec, ModelSpecError
from export.errors import ExportConfigError, OnnxExportError
from export.onnx.deploy import DeploySpec, DeployWrapper
from export.source import ModelFromCheckpoint
from runtime.io_names import INPUT_NAME

_PROTOBUF_LIMIT = 2**31 - 1


def tracing_input(batch: int, imgsz: tuple[int, int], seed: int) -> torch.Tensor:
    """The one input the graph is traced with. Batch 2 (not 1) so a batch size accidentally
    baked into a Reshape shows up as a parity failure at batch 1. Parity never reuses it."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, *imgsz, generator=g)


def eager_output_shapes(
    wrapper: DeployWrapper, images: torch.Tensor, spec: ModelSpec
) -> list[tuple[int, ...]]:
    """One eager pass: checks the multi-task contract (so a model that breaks it fails here
    with a message, not deep inside the tracer) and returns the graph output shapes."""
    with torch.no_grad():
        out = wrapper.raw(images)
        try:
            spec.check_outputs(out, images.shape[2:], images.shape[0])
        except ModelSpecError as e:
            raise ExportConfigError(f"{e} (eval mode)") from None
        return [tuple(t.shape) for t in wrapper.finish(out)]


class OnnxFromModel:
    """Lazy: calling traces `DeployWrapper(model, spec)` and returns the ONNX ModelProto with a
    dynamic batch axis and fixed H, W."""

    def __init__(
        self,
        model: nn.Module | Any,
        spec: DeploySpec,
        imgsz: tuple[int, int],
        opset: int,
        seed: int = 0,
        model_spec: ModelSpec | None = None,
    ):
        self.model, self.spec, self.imgsz, self.opset, self.seed = model, spec, imgsz, opset, seed
        self.model_spec = model_spec

    def _module(self) -> tuple[nn.Module, ModelSpec]:
        if isinstance(self.model, nn.Module):
            return self.model, spec_of(self.model, self.model_spec)
        loaded = self.model()
        return loaded.model, loaded.spec

    def wrapper(self) -> DeployWrapper:
        return DeployWrapper(self._module()[0], self.spec).eval()

    def __call__(self) -> onnx.ModelProto:
        wrapper = self.wrapper()
        images = tracing_input(2, self.imgsz, self.seed)
        shapes = eager_output_shapes(wrapper, images, self._module()[1])
        names = list(self.spec.output_names)
        axes = {n: {0: "batch"} for n in [INPUT_NAME, *names]}
        try:
            with torch.no_grad(), warnings.catch_warnings(), tempfile.TemporaryDirectory() as d:
                warnings.simplefilter("ignore")
                path = Path(d) / "model.onnx"
                torch.onnx.export(
                    wrapper,
                    (images,),
                    path,
                    input_names=[INPUT_NAME],
                    output_names=names,
                    dynamic_axes=axes,
                    opset_version=self.opset,
                    do_constant_folding=True,
                    dynamo=False,
                )
                data = path.read_bytes()
        except Exception as e:  # the tracer raises many types; keep the first line
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            raise OnnxExportError(
                f"torch.onnx.export failed at opset {self.opset}: {first}; the model must be "
                "traceable (no data-dependent Python control flow in forward)"
            ) from None
        model = _load_checked(data)
        _declare_output_shapes(model, shapes)
        return model


class OnnxFromCheckpoint(OnnxFromModel):
    """`OnnxFromModel` over `ModelFromCheckpoint(path)`."""

    def __init__(
        self, path: str | Path, spec: DeploySpec, imgsz: tuple[int, int], opset: int, seed: int = 0
    ):
        super().__init__(ModelFromCheckpoint(path), spec, imgsz, opset, seed)


def _declare_output_shapes(model: onnx.ModelProto, shapes: list[tuple[int, ...]]) -> None:
    """The tracer leaves shapes computed by Reshape undeclared on the graph outputs; write the
    eager shapes (batch symbolic) so the graph states its static dims even unsimplified."""
    for value, shape in zip(model.graph.output, shapes):
        dims = value.type.tensor_type.shape.dim
        del dims[:]
        for k, size in enumerate(shape):
            d = dims.add()
            if k == 0:
                d.dim_param = "batch"
            else:
                d.dim_value = int(size)


def _load_checked(data: bytes) -> onnx.ModelProto:
    if len(data) >= _PROTOBUF_LIMIT:
        raise OnnxExportError(
            f"the ONNX is {len(data)} bytes, over protobuf's 2 GiB single-file limit"
        )
    model = onnx.load_from_string(data)
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:
        raise OnnxExportError(f"exported ONNX fails onnx.checker: {str(e)[:300]}") from None
    return model
