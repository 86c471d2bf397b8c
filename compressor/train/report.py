"""Human and machine-readable reports of training and evaluation (JSON + Markdown, atomic)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from runtime.fileio import atomic_write_text

HEADLINE = (
    ("det_precision", "det P"),
    ("det_recall", "det R"),
    ("det_map50", "mAP50"),
    ("det_map50_95", "mAP50-95"),
    ("drivable_miou", "DA mIoU"),
    ("drivable_acc", "DA acc"),
    ("lane_iou", "LL IoU"),
    ("lane_recall", "LL recall"),
    ("lane_balanced_acc", "LL bal.acc"),
)


def json_safe(obj: object) -> object:
    """NaN/inf -> None (strict JSON), tuples -> lists, numpy scalars -> Python numbers."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, str | bytes):
        try:
            obj = obj.item()
        except (ValueError, TypeError):
            return str(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    return str(obj)


def write_json(path: str | Path, obj: object) -> Path:
    return atomic_write_text(path, json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n")


def _fmt(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{100 * v:.1f}" if -1.0 <= v <= 1.0 else f"{v:.3g}"
    return str(v)


def headline_rows(summary: dict) -> list[tuple[str, str]]:
    return [(label, _fmt(summary[key])) for key, label in HEADLINE if key in summary]


def eval_text(report: dict) -> str:
    """Console table of the headline numbers (percent) plus the protocol in one line."""
    rows = headline_rows(report["summary"])
    width = max(len(label) for label, _ in rows) if rows else 0
    proto = report["protocol"]
    lines = [f"{label:<{width}}  {value:>6}" for label, value in rows]
    lines.append(
        f"({report['num_images']} images; det mode {'/'.join(proto['det_modes'])}; seg: "
        f"{proto['seg_aggregation']}; lane labels: {proto['lane_labels_text']})"
    )
    return "\n".join(lines)


def eval_markdown(report: dict, title: str = "Evaluation") -> str:
    proto = report["protocol"]
    rows = headline_rows(report["summary"])
    lines = [f"# {title}", "", "| metric | value (%) |", "|---|---|"]
    lines += [f"| {label} | {value} |" for label, value in rows]
    if len(report.get("det", {})) > 1:  # several detection modes: one row each
        lines += ["", "| detection mode | P | R | mAP50 | mAP50-95 |", "|---|---|---|---|---|"]
        for mode, d in report["det"].items():
            cells = [_fmt(d[k]) for k in ("precision", "recall", "map50", "map50_95")]
            lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"- images: {report['num_images']}, {report.get('images_per_s') or 0:.1f} images/s",
        f"- detection: mode(s) {', '.join(proto['det_modes'])}; NMS conf {proto['nms']['conf']}, "
        f"IoU {proto['nms']['iou']}, max {proto['nms']['max_det']}; boxes compared at "
        f"{proto['boxes_compared_at']}",
        f"- segmentation: {proto['seg_aggregation']}; {proto['seg_resolution']}",
        f"- lane labels: {proto['lane_labels_text']}; lane 'accuracy' is reported as recall "
        "(YOLOP) and balanced accuracy, named as what they are",
    ]
    return "\n".join(lines) + "\n"


def history_markdown(history: list[dict], title: str = "Training") -> str:
    """One row per epoch: train losses per task, then the validation headline numbers."""
    loss_keys = sorted({k for h in history for k in h.get("train", {}) if "_" not in k})
    val_keys = [
        (k, label) for k, label in HEADLINE if any(k in (h.get("val") or {}) for h in history)
    ]
    head = ["epoch", "lr"] + [f"loss {k}" for k in loss_keys] + [label for _, label in val_keys]
    lines = [f"# {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for h in history:
        train, val = h.get("train", {}), h.get("val") or {}
        cells = [str(h["epoch"]), f"{h.get('lr', 0):.2e}"]
        cells += [f"{train[k]:.4f}" if k in train else "-" for k in loss_keys]
        cells += [_fmt(val.get(k)) for k, _ in val_keys]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_training_report(out_dir: Path, payload: dict) -> None:
    write_json(out_dir / "metrics.json", payload)
    md = history_markdown(payload["history"], f"Training: {payload.get('name', out_dir.name)}")
    if payload.get("best"):
        md += f"\nBest checkpoint: epoch {payload['best']['epoch']}, score {_fmt(payload['best']['score'])} "
        md += f"({payload['best_metric']}).\n"
    atomic_write_text(out_dir / "metrics.md", md)
