"""`export_model`: checkpoint or model -> verified ONNX (+ FP16 ONNX) -> TensorRT engine, each
artifact with its sidecar, plus a ready trtexec command and build script, and
`export_summary.json`. Stages are the lazy loaders of the other modules; this file only orders
them, stages files (nothing half-written) and collects the numbers."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import onnx
from torch import nn
from tqdm import tqdm

from compressor.models.spec import ModelSpec, spec_of
from export import stages
from export.config import ExportConfig
from export.errors import ExportError, LintError, TensorRTUnavailableError
from export.onnx.trace import LoadedModel, ModelFromCheckpoint
from export.outputs import check_export_folder, remove_stale_exports
from export.staging import Staging, prepare_output_dir
from export.summary import SUMMARY_FILE, artifact_record, write_summary
from export.tensorrt.lint import LintReport
from runtime.cli_kernel import check_output_dir
from runtime.errors import MtcError
from runtime.fileio import atomic_write_text

_STAGES = ("load", "onnx", "parity", "lint", "fp16", "write", "engine")


@dataclass
class ExportResult:
    output_dir: Path
    name: str
    artifacts: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    summary_path: Path | None = None

    def artifact(self, kind: str) -> Path | None:
        """Path of the written artifact of a kind: "onnx", "onnx_fp16", "engine", "trtexec",
        "build_script" (None if it was not written)."""
        hit = next((a for a in self.artifacts if a["kind"] == kind), None)
        return Path(hit["path"]) if hit else None


def _loaded_from_module(
    model: nn.Module, imgsz: tuple[int, int] | None, spec: ModelSpec | None
) -> LoadedModel:
    ms = spec_of(model, spec)
    return LoadedModel(
        model.eval(),
        str(getattr(model, "model_name", ms.name)),
        dict(getattr(model, "config", {}) or {}),
        ms.preprocess.to_dict(imgsz),
        list(ms.class_names),
        ms,
    )


class _Export:
    def __init__(
        self,
        source: str | Path | nn.Module,
        cfg: ExportConfig,
        spec: ModelSpec | None = None,
        model: nn.Module | None = None,
    ):
        self.cfg, self.source, self.spec, self.model = cfg, source, spec, model
        self._created = not Path(cfg.output_dir).exists()
        check_output_dir(cfg.output_dir, "-o")
        self._name = cfg.name or (
            Path(source).stem
            if isinstance(source, (str, Path))
            else str(getattr(source, "model_name", type(source).__name__))
        )
        check_export_folder(Path(cfg.output_dir), self._name, cfg.overwrite)
        self.out_dir = prepare_output_dir(Path(cfg.output_dir))
        self.summary: dict[str, Any] = {"config": asdict(cfg), "timings_s": {}}
        self.result = ExportResult(self.out_dir, "")
        self._bar: Any = None

    @contextmanager
    def _stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        if self._bar is not None:
            self._bar.set_postfix_str(name)
        yield
        self.summary["timings_s"][name] = round(time.perf_counter() - start, 3)
        if self._bar is not None:
            self._bar.update(1)

    def run(self) -> ExportResult:
        try:
            with tqdm(
                total=len(_STAGES),
                desc="mtc-export",
                file=sys.stderr,
                disable=not self.cfg.progress,
                leave=False,
            ) as self._bar:
                self._run_stages()
        except BaseException:
            if self._created and not any(self.out_dir.iterdir()):
                self.out_dir.rmdir()  # a failed export leaves no trace, not even its folder
            raise
        return self.result

    def _run_stages(self) -> None:
        with self._stage("load"):
            self.loaded = (
                ModelFromCheckpoint(self.source, self.model, self.spec)()
                if not isinstance(self.source, nn.Module)
                else _loaded_from_module(self.source, self.cfg.imgsz, self.spec)
            )
            self.plan = stages.resolve_plan(self.cfg, self.loaded, self.source)
            self.result.name = self.plan.name
            self.summary.update(stages.describe_source(self.loaded, self.plan))
        with self._stage("onnx"):
            self.fp32, self.wrapper, simp = stages.make_onnx(self.loaded, self.plan, self.cfg)
            self.summary["simplifier"] = asdict(simp)
        with self._stage("parity"):
            self.cases = stages.probe(self.plan, self.loaded, self.cfg)
            self.summary["parity"] = stages.parity(self.wrapper, self.fp32, self.cases, self.cfg)
        with self._stage("lint"):
            self._lint(self.fp32, "fp32", f"{self.plan.name}.onnx")
        with self._stage("fp16"):
            self.fp16 = self._fp16()
        with self._stage("write"):
            self._write_onnx()
        with self._stage("engine"):
            self._engine()

    def _lint(self, model: onnx.ModelProto, key: str, artifact: str) -> LintReport:
        rep = stages.lint(model, self.plan.trt_target)
        self.summary.setdefault("lint", {})[key] = rep.to_dict()
        if not rep.ok and not (self.cfg.engine == "none" and self.cfg.allow_lint_fail):
            path = self.out_dir / f"{Path(artifact).stem}.lint.json"
            atomic_write_text(path, stages.to_json(rep.to_dict()))
            try:
                stages.require_lint(rep, artifact)
            except LintError as e:
                raise LintError(f"{e} (full report: {path})") from None
        return rep

    def _fp16(self) -> onnx.ModelProto | None:
        if not self.cfg.fp16_onnx:
            self.summary["fp16"] = None
            return None
        model, info, reports = stages.make_fp16(self.fp32, self.cases, self.plan, self.cfg)
        self.summary["fp16_conversion"] = asdict(info)
        self.summary["fp16"] = reports
        self._lint(model, "fp16", f"{self.plan.name}_fp16.onnx")
        return model

    def _write_onnx(self) -> None:
        with Staging(self.out_dir) as staging:
            self.facts = stages.facts_for(self.plan, self.loaded, self.fp32)
            checks = stages.stage_onnx(
                staging, self.fp32, self.fp16, self.loaded, self.plan, self.facts, self.cases
            )
            self.summary["runtime_check"] = checks
            scripts = stages.stage_scripts(staging, self.plan, self.cfg, self.fp16 is not None)
            self.summary["engine"] = scripts
            if self.cfg.overwrite:
                remove_stale_exports(self.out_dir, self.plan.name)
            for path in staging.commit():
                self.result.artifacts.append(artifact_record(path))

    def _engine(self) -> None:
        eng = self.summary["engine"]
        if self.cfg.engine == "none" or self.cfg.dry_run:
            eng.update(
                status="skipped",
                reason="--engine none"
                if self.cfg.engine == "none"
                else "--dry-run: build on the target with the script above",
            )
            return self._finish()
        try:
            built = stages.build_engine(self.plan, self.cfg, self.out_dir, self.fp16 is not None)
        except TensorRTUnavailableError as e:
            eng.update(status="not_built", reason=str(e))
            self._finish()
            err = TensorRTUnavailableError(
                f"{e}. The ONNX artifacts, sidecars and a ready build are in {self.out_dir}: "
                f"run {eng['trtexec_script']} or {eng['build_script']} on the target"
            )
            err.result = self.result  # type: ignore[attr-defined]
            raise err from None
        except ExportError as e:
            eng.update(status="failed", reason=str(e))
            self._finish()
            raise
        try:
            self._stage_engine(built)
        except MtcError as e:  # built, but it could not be verified: nothing is kept
            eng.update(status="failed", reason=f"engine not verified: {e}")
            self._finish()
            raise
        self._finish()

    def _stage_engine(self, built: Any) -> None:
        eng = self.summary["engine"]
        with Staging(self.out_dir) as staging:
            report = stages.stage_engine(
                staging, built, self.loaded, self.plan, self.facts, self.cases, self.cfg
            )
            eng.update(
                status="built",
                parity_vs_onnx_fp32=report,
                tensorrt=built.version,
                gpu=built.gpu,
                fp16_path=built.fp16_path,
                build_flags=built.build_flags,
                timing_cache=built.timing_cache,
            )
            for path in staging.commit():
                self.result.artifacts.append(artifact_record(path))

    def _finish(self) -> None:
        self.summary["artifacts"] = self.result.artifacts
        self.result.summary = self.summary
        self.result.summary_path = write_summary(self.out_dir / SUMMARY_FILE, self.summary)


def export_model(
    source: str | Path | nn.Module,
    config: ExportConfig | None = None,
    spec: ModelSpec | None = None,
    model: nn.Module | None = None,
) -> ExportResult:
    """Export a checkpoint path (ours, or a registered model's official file) or a model to
    verified artifacts. A model that is not registered passes its `spec` (and, for a
    checkpoint path, the `model` architecture to load it into).

    Raises a subclass of `ExportError` (an `MtcError`) on anything the user can fix; on failure
    before the ONNX is verified nothing is left in the output folder. When only the engine is
    missing (no TensorRT), the ONNX artifacts are written and the error carries `.result`."""
    return _Export(source, config or ExportConfig(), spec, model).run()


__all__ = ["ExportResult", "export_model"]
