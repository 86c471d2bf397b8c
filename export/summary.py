"""`export_summary.json` and the table `mtc-export` prints: what was written, how big, and the
numbers that say it can be trusted (parity, FP16 agreement, lint, engine).

`ExportSummary` is the typed form the stages fill in; `to_dict()` is the JSON, whose keys and
shape are the file's contract (the demo, the tests and users read it)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, is_dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from export.checks.parity import ParityReport
from export.config import ExportConfig
from export.fp16.agreement import Fp16Report
from export.fp16.convert import Fp16Info
from export.onnx.simplify import SimplifierInfo
from export.tensorrt.build import BuiltEngine
from export.tensorrt.lint import LintReport
from runtime.fileio import atomic_write_text, file_sha256
from runtime.sidecar import sidecar_path

SUMMARY_FILE = "export_summary.json"
# The "config" block: one flat key per option -> (ExportConfig section, field); "" = top level.
# The keys are the file's contract (they predate the sections), so they are listed, not derived.
CONFIG_KEYS: tuple[tuple[str, str, str], ...] = (
    ("output_dir", "output", "dir"),
    ("name", "output", "name"),
    ("overwrite", "output", "overwrite"),
    ("imgsz", "input", "imgsz"),
    ("batch", "input", "batch"),
    ("min_batch", "input", "min_batch"),
    ("max_batch", "input", "max_batch"),
    ("input_dtype", "input", "dtype"),
    ("opset", "onnx", "opset"),
    ("nms_in_graph", "onnx", "nms_in_graph"),
    ("seg_output", "onnx", "seg_output"),
    ("conf_thres", "onnx", "conf_thres"),
    ("iou_thres", "onnx", "iou_thres"),
    ("max_det", "onnx", "max_det"),
    ("simplifier", "onnx", "simplifier"),
    ("fp16_onnx", "half", "enabled"),
    ("fp16_keep_resize_fp32", "half", "keep_resize_fp32"),
    ("engine", "tensorrt", "engine"),
    ("workspace_mib", "tensorrt", "workspace_mib"),
    ("opt_level", "tensorrt", "opt_level"),
    ("timing_cache_dir", "tensorrt", "timing_cache_dir"),
    ("dla_core", "tensorrt", "dla_core"),
    ("trt_target", "tensorrt", "target"),
    ("trt_nms", "tensorrt", "nms"),
    ("dry_run", "tensorrt", "dry_run"),
    ("allow_lint_fail", "tensorrt", "allow_lint_fail"),
    ("parity_batch_cap", "checks", "parity_batch_cap"),
    ("seed", "", "seed"),
    ("progress", "output", "progress"),
    ("parity", "checks", "parity"),
    ("fp16", "checks", "fp16"),
    ("int8", "", "int8"),
)


def config_block(cfg: ExportConfig) -> dict[str, Any]:
    """export_summary.json's "config" block of an ExportConfig (see CONFIG_KEYS)."""
    out = {}
    for key, section, name in CONFIG_KEYS:
        value = getattr(getattr(cfg, section) if section else cfg, name)
        out[key] = asdict(value) if is_dataclass(value) and not isinstance(value, type) else value
    return out


_KINDS = (
    ("_fp16.onnx", "onnx_fp16"),
    ("_int8.onnx", "onnx_int8"),
    ("_int8.calib", "calib_cache"),
    (".onnx", "onnx"),
    (".engine", "engine"),
    (".onnx.json", "sidecar"),
    (".engine.json", "sidecar"),
    ("_trtexec.sh", "trtexec"),
    ("_build_engine.py", "build_script"),
)


class EngineStatus(str, Enum):
    """What became of the engine; the value is what the JSON says."""

    BUILT = "built"
    SKIPPED = "skipped"  # --engine none or --dry-run: the build scripts are the way
    NOT_BUILT = "not_built"  # no TensorRT / GPU here
    FAILED = "failed"  # the build or its check failed; nothing was kept


@dataclass(frozen=True)
class ArtifactRecord:
    path: str
    kind: str  # onnx | onnx_fp16 | engine | sidecar | trtexec | build_script | other
    size_bytes: int
    sha256: str | None
    sidecar: str | None

    @classmethod
    def of(cls, path: Path) -> ArtifactRecord:
        side = sidecar_path(path)
        kind = _kind(path.name)
        return cls(
            str(path),
            kind,
            path.stat().st_size,
            file_sha256(path) if kind in ("onnx", "onnx_fp16", "engine") else None,
            str(side) if side.is_file() else None,
        )


@dataclass(frozen=True)
class SourceInfo:
    checkpoint: str | None
    sha256: str | None
    model: str
    model_config: dict[str, Any]


@dataclass(frozen=True)
class RuntimeCheck:
    """An ONNX artifact read back through `runtime.load_artifact` vs ONNX Runtime in memory."""

    case: str
    loaded_by: str
    max_abs_vs_ort: float


@dataclass
class EngineSummary:
    """The build for the target (commands, always written) and what became of the engine here."""

    target: str
    precision: str
    fp16_path: str | None
    trtexec: str
    trtexec_script: str
    build_script: str
    trt_nms: str = "none"  # NMS appended to the engine (--trt-nms)
    status: EngineStatus | None = None
    reason: str | None = None  # why not built (every status but BUILT)
    parity_vs_onnx_fp32: Fp16Report | None = None
    built: BuiltEngine | None = None
    # what the engine was checked against: the FP32 ONNX, or (an INT8 engine) the INT8 ONNX;
    # the JSON key is parity_vs_<this>
    parity_reference: str = "onnx_fp32"

    def finish(self, status: EngineStatus, reason: str) -> None:
        self.status, self.reason = status, reason

    def mark_built(self, built: BuiltEngine, report: Fp16Report) -> None:
        self.status, self.built, self.parity_vs_onnx_fp32 = EngineStatus.BUILT, built, report
        self.fp16_path = built.fp16_path

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "target": self.target,
            "precision": self.precision,
            "fp16_path": self.fp16_path,
            "trt_nms": self.trt_nms,
            "trtexec": self.trtexec,
            "trtexec_script": self.trtexec_script,
            "build_script": self.build_script,
        }
        if self.status is not None:
            out["status"] = self.status.value
        if self.reason is not None:
            out["reason"] = self.reason
        if self.built is not None and self.parity_vs_onnx_fp32 is not None:
            b = self.built
            out[f"parity_vs_{self.parity_reference}"] = self.parity_vs_onnx_fp32.to_dict()
            out.update(
                tensorrt=b.version,
                gpu=b.gpu,
                build_flags=b.build_flags,
                timing_cache=b.timing_cache,
            )
        return out


@dataclass
class ExportSummary:
    """Filled stage by stage; a field is None until its stage ran."""

    config: dict[str, Any]  # config_block(ExportConfig)
    timings_s: dict[str, float] = field(default_factory=dict)
    name: str | None = None
    imgsz: tuple[int, int] | None = None
    trt_target: str | None = None
    tensorrt_installed: str | None = None
    source: SourceInfo | None = None
    versions: dict[str, str] = field(default_factory=dict)
    simplifier: SimplifierInfo | None = None
    parity: ParityReport | None = None
    lint: dict[str, LintReport] = field(default_factory=dict)  # "fp32", "fp16"
    fp16_conversion: Fp16Info | None = None
    fp16: dict[str, Fp16Report] | None = None  # "onnxruntime", "emulated"; None without FP16
    runtime_check: dict[str, RuntimeCheck] = field(default_factory=dict)  # by file name
    engine: EngineSummary | None = None
    artifacts: list[ArtifactRecord] = field(default_factory=list)
    int8: dict[str, Any] | None = None  # export.int8.stage: calibration, guard, deltas

    def to_dict(self) -> dict[str, Any]:
        """The JSON of export_summary.json, keys in the order the stages add them. Written once
        the artifacts are staged, so every stage before the engine has run."""
        out: dict[str, Any] = {
            "config": self.config,
            "timings_s": dict(self.timings_s),
            "name": self.name,
            "imgsz": list(self.imgsz or ()),
            "trt_target": self.trt_target,
            "tensorrt_installed": self.tensorrt_installed,
            "source": asdict(self.source) if self.source else None,
            "versions": dict(self.versions),
            "simplifier": asdict(self.simplifier) if self.simplifier else None,
            "parity": self.parity.to_dict() if self.parity else None,
            "lint": {k: v.to_dict() for k, v in self.lint.items()},
        }
        if self.fp16_conversion is not None:  # absent, not null, without an FP16 ONNX
            out["fp16_conversion"] = asdict(self.fp16_conversion)
        out["fp16"] = {k: v.to_dict() for k, v in self.fp16.items()} if self.fp16 else None
        if self.int8 is not None:  # absent, not null, without --int8
            out["int8"] = self.int8
        out["runtime_check"] = {k: asdict(v) for k, v in self.runtime_check.items()}
        out["engine"] = self.engine.to_dict() if self.engine else None
        out["artifacts"] = [asdict(a) for a in self.artifacts]
        return out


def _kind(name: str) -> str:
    hits = [k for suffix, k in _KINDS if name.endswith(suffix)]
    return "sidecar" if "sidecar" in hits else (hits[0] if hits else "other")


def write_summary(path: Path, summary: dict) -> Path:
    return atomic_write_text(path, json.dumps(summary, indent=2, default=str) + "\n")


def _size(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def _parity_text(p: dict) -> str:
    vals = {k: v["value"] for k, v in p["outputs"].items()}
    parts = [f"{k} {v:.2g}" for k, v in vals.items()]
    return f"parity vs torch {'PASS' if p['ok'] else 'FAIL'}: " + ", ".join(parts)


def _fp16_text(f: dict) -> str:
    masks = "/".join(f"{v:.2f}%" for v in f["mask_agreement_pct"].values())
    iou = (
        f"IoU mean {f['mean_iou']:.3f} min {f['min_iou']:.3f}"
        if f["mean_iou"] is not None
        else "no boxes"
    )
    return f"vs FP32: masks {masks}, {iou}, score delta {f['score_max_delta']:.2g}"


def _lint_text(summary: dict, key: str) -> str:
    lint = summary.get("lint", {}).get(key)
    if not lint:
        return ""
    warn = sum(i["severity"] == "warning" for i in lint["issues"])
    return f"lint TRT {lint['target_tensorrt']} {'PASS' if lint['ok'] else 'FAIL'}" + (
        f" ({warn} warning{'s' * (warn != 1)})" if warn else ""
    )


def _row_checks(summary: dict, kind: str) -> str:
    if kind == "onnx":
        return "; ".join(
            x for x in (_parity_text(summary["parity"]), _lint_text(summary, "fp32")) if x
        )
    if kind == "onnx_fp16" and summary.get("fp16"):
        emulated = "emulated FP16 " + _fp16_text(summary["fp16"]["emulated"])
        return "; ".join(x for x in (emulated, _lint_text(summary, "fp16")) if x)
    if kind == "onnx_int8" and summary.get("int8"):
        return "; ".join(x for x in (_int8_text(summary["int8"]), _lint_text(summary, "int8")) if x)
    if kind == "engine":
        eng = summary.get("engine", {})
        rep = eng.get("parity_vs_onnx_fp32") or eng.get("parity_vs_onnx_int8")
        how = "int8" if eng.get("precision") == "int8" else eng.get("fp16_path") or "fp32"
        return f"TensorRT {eng.get('tensorrt')} on {eng.get('gpu')}, {how}; " + (
            _fp16_text(rep) if rep else ""
        )
    return ""


def _int8_text(q: dict) -> str:
    d = q.get("deltas") or {}
    parts = ", ".join(f"{k} {v:+.2f}" for k, v in d.items())
    fb = q.get("fallback") or []
    share = q.get("quantized_flops_share")
    return (
        f"{q['calibration']} calibration, {share:.0%} of conv FLOPs in INT8, "
        f"{len(fb)} group{'s' * (len(fb) != 1)} in FP16; vs FP32 (points): {parts or 'not scored'}"
    )


def format_table(summary: dict) -> str:
    rows = [("artifact", "size", "checks")]
    for a in summary.get("artifacts", []):
        if a["kind"] == "sidecar":
            continue
        rows.append((Path(a["path"]).name, _size(a["size_bytes"]), _row_checks(summary, a["kind"])))
    eng = summary.get("engine", {})
    if eng.get("status") and eng["status"] != "built":
        first = str(eng.get("reason", "")).split(";")[0].split(". ")[0]
        rows.append(("engine", "-", f"{eng['status'].replace('_', ' ')}: {first}"[:120]))
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    return "\n".join(f"{a:<{w0}}  {b:>{w1}}  {c}".rstrip() for a, b, c in rows)
