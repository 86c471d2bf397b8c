"""`export_summary.json` and the table `mtc-export` prints: what was written, how big, and the
numbers that say it can be trusted (parity, FP16 agreement, lint, engine)."""

from __future__ import annotations

import json
from pathlib import Path

from runtime.fileio import atomic_write_text, file_sha256
from runtime.sidecar import sidecar_path

SUMMARY_FILE = "export_summary.json"
_KINDS = (
    ("_fp16.onnx", "onnx_fp16"),
    (".onnx", "onnx"),
    (".engine", "engine"),
    (".onnx.json", "sidecar"),
    (".engine.json", "sidecar"),
    ("_trtexec.sh", "trtexec"),
    ("_build_engine.py", "build_script"),
)


def _kind(name: str) -> str:
    hits = [k for suffix, k in _KINDS if name.endswith(suffix)]
    return "sidecar" if "sidecar" in hits else (hits[0] if hits else "other")


def artifact_record(path: Path) -> dict:
    side = sidecar_path(path)
    kind = _kind(path.name)
    return {
        "path": str(path),
        "kind": kind,
        "size_bytes": path.stat().st_size,
        "sha256": file_sha256(path) if kind in ("onnx", "onnx_fp16", "engine") else None,
        "sidecar": str(side) if side.is_file() else None,
    }


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
    if kind == "engine":
        eng = summary.get("engine", {})
        rep = eng.get("parity_vs_onnx_fp32")
        return (
            f"TensorRT {eng.get('tensorrt')} on {eng.get('gpu')}, "
            f"{eng.get('fp16_path') or 'fp32'}; " + (_fp16_text(rep) if rep else "")
        )
    return ""


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
