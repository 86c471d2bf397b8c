"""The one object an export's stages share: what was asked (config, source), where it goes, and
everything the stages found so far (model, plan, ONNX models, probe inputs, graph facts, engine,
summary). Each stage in `stages` reads what earlier stages wrote here and adds its own."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from torch import nn

from compressor.models.spec import ModelSpec
from export.config import ExportConfig
from export.onnx.deploy import DeployWrapper
from export.plan import ExportPlan
from export.sidecars import GraphFacts
from export.source import LoadedModel
from export.summary import ExportSummary, config_block
from runtime.sidecar import Int8Info


@dataclass
class ExportResult:
    output_dir: Path
    name: str
    artifacts: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)  # export_summary.json's content
    summary_path: Path | None = None
    report: ExportSummary | None = None  # the same, typed

    def artifact(self, kind: str) -> Path | None:
        """Path of the written artifact of a kind: "onnx", "onnx_fp16", "engine", "trtexec",
        "build_script" (None if it was not written)."""
        hit = next((a for a in self.artifacts if a["kind"] == kind), None)
        return Path(hit["path"]) if hit else None


@dataclass
class ExportRun:
    """State of one export. The fields after `result` are set by the stage named beside them;
    reading one before its stage ran raises AttributeError (never a silent None)."""

    cfg: ExportConfig
    source: str | Path | nn.Module
    out_dir: Path
    spec: ModelSpec | None = None  # of a model that is not registered
    model: nn.Module | None = None  # architecture to load a checkpoint of such a model into
    summary: ExportSummary = field(init=False)
    result: ExportResult = field(init=False)
    loaded: LoadedModel = field(init=False)  # load
    plan: ExportPlan = field(init=False)  # load
    fp32: onnx.ModelProto = field(init=False)  # onnx (simplified, verified by parity)
    wrapper: DeployWrapper = field(init=False)  # onnx: the PyTorch reference
    cases: list[tuple[str, np.ndarray]] = field(init=False)  # parity: the probe inputs
    fp16: onnx.ModelProto | None = field(init=False, default=None)  # fp16
    facts: GraphFacts = field(init=False)  # write
    int8: onnx.ModelProto | None = field(init=False, default=None)  # int8 (Q/DQ, guarded)
    int8_info: Int8Info | None = field(init=False, default=None)  # int8: the sidecar block
    int8_amax: dict[str, float] | None = field(init=False, default=None)  # int8: ranges
    int8_error: str | None = field(init=False, default=None)  # int8: why none was written

    def __post_init__(self) -> None:
        self.summary = ExportSummary(config=config_block(self.cfg))
        self.result = ExportResult(self.out_dir, "")

    def onnx_path(self, fp16: bool = False) -> Path:
        """Where the (FP16) ONNX is once written."""
        return self.out_dir / f"{self.plan.name}{'_fp16' if fp16 else ''}.onnx"

    def int8_path(self) -> Path:
        return self.out_dir / f"{self.plan.name}_int8.onnx"
