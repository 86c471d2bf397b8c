"""The demo's one report: teacher vs student, side by side — metrics, size, latency per artifact,
plots and overlays. Markdown for people, JSON for machines, PNGs where a picture says more."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from runtime.fileio import atomic_write_text
from runtime.overlay import draw_overlay
from runtime.postprocess import FrameResult

# (report label, key of the evaluation summary; all in [0, 1], higher is better)
METRIC_ROWS: tuple[tuple[str, str], ...] = (
    ("det recall", "det_recall"),
    ("det mAP@0.5", "det_map50"),
    ("det mAP@0.5:0.95", "det_map50_95"),
    ("drivable mIoU", "drivable_miou"),
    ("lane IoU", "lane_iou"),
    ("lane recall (YOLOP 'acc')", "lane_recall"),
)


def metric_value(summary: dict, key: str) -> float | None:
    v = summary.get(key)
    return None if v is None else float(v)


def _fmt(v: Any, pct: bool = True) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{100 * v:.1f}" if pct else f"{v:.2f}"
    return str(v)


def metrics_table(teacher: dict, student: dict) -> list[str]:
    rows = ["| metric (%) | teacher | student | delta (points) |", "|---|---|---|---|"]
    for label, key in METRIC_ROWS:
        t, s = metric_value(teacher, key), metric_value(student, key)
        if t is None and s is None:
            continue  # a task the model does not have (e.g. no detection)
        d = None if t is None or s is None else f"{100 * (s - t):+.1f}"
        rows.append(f"| {label} | {_fmt(t)} | {_fmt(s)} | {d or 'n/a'} |")
    return rows


def latency_table(latency: list[dict]) -> list[str]:
    rows = [
        "| model | artifact | backend | precision | batch | p50 frame latency ms | p99 frame latency ms | fps "
        "| latency-bound | throughput-bound |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in latency:
        e2e = r["report"]["stages_ms"].get("end_to_end", {})
        verdicts = {v["mode"]: v["passed"] for v in r["report"]["verdicts"]}
        fps = r["report"]["throughput_fps"]
        rows.append(
            f"| {r['model']} | {r['artifact']} | {r['report']['info']['backend']} | "
            f"{r['report']['info']['precision']} | {r['batch']} | {e2e.get('p50', 0):.1f} | "
            f"{e2e.get('p99', 0):.1f} | {fps or 0:.1f} | {_verdict(verdicts.get('latency'))} | "
            f"{_verdict(verdicts.get('throughput'))} |"
        )
    return rows


def _verdict(v: bool | None) -> str:
    return "n/a" if v is None else ("PASS" if v else "FAIL")


def plot_metrics(teacher: dict, student: dict, path: Path) -> Path | None:
    """Grouped bars, teacher vs student, one group per metric."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    labels = [label for label, _ in METRIC_ROWS]
    t = [100 * (metric_value(teacher, k) or 0) for _, k in METRIC_ROWS]
    s = [100 * (metric_value(student, k) or 0) for _, k in METRIC_ROWS]
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.bar(x - 0.2, t, 0.4, label="teacher")
    ax.bar(x + 0.2, s, 0.4, label="student (pruned + distilled)")
    ax.set_xticks(x, labels, rotation=20, ha="right")
    ax.set_ylabel("%")
    ax.set_title("Validation metrics, same split")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_latency(latency: list[dict], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    names = [f"{r['model']}\n{r['artifact_kind']} b{r['batch']}" for r in latency]
    p50 = [r["report"]["stages_ms"]["end_to_end"]["p50"] for r in latency]
    p99 = [r["report"]["stages_ms"]["end_to_end"]["p99"] for r in latency]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(names)), 4))
    ax.bar(x - 0.2, p50, 0.4, label="p50")
    ax.bar(x + 0.2, p99, 0.4, label="p99")
    ax.set_xticks(x, names, fontsize=8)
    ax.set_ylabel("ms per frame (end to end)")
    ax.set_title("Runtime latency per artifact")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def side_by_side(
    frame: np.ndarray, teacher: FrameResult, student: FrameResult, class_names: tuple[str, ...]
) -> np.ndarray:
    """Teacher overlay | student overlay, labelled, for looking at what pruning changed."""
    panels = []
    for title, res in (("teacher", teacher), ("student", student)):
        img = draw_overlay(frame, res, class_names=class_names)
        cv2.putText(img, title, (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2)
        panels.append(img)
    return np.concatenate(panels, axis=1)


def write_overlays(
    frames: list[np.ndarray],
    teacher: list[FrameResult],
    student: list[FrameResult],
    out_dir: Path,
    prefix: str,
    class_names: tuple[str, ...],
) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (frame, t, s) in enumerate(zip(frames, teacher, student)):
        path = out_dir / f"{prefix}_{i:03d}.jpg"
        ok, buf = cv2.imencode(".jpg", side_by_side(frame, t, s, class_names))
        if ok:
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(buf.tobytes())
            tmp.replace(path)
            paths.append(path)
    return paths


def side_by_side_latency(lat: dict) -> list[str]:
    """Teacher vs student FP32 ONNX timed interleaved in one run (the compression's check)."""
    m, p = lat.get("measured"), lat.get("predicted")
    if not m:
        return []
    lines = [
        "## Speed: teacher vs student, measured side by side",
        "",
        f"FP32 ONNX on {m['backend']} ({m['device']}), batch {m['batch']}, "
        f"{m['threads'] or 'default'} thread(s), {m['clock']}; the two models alternate over "
        f"{len(m['rounds']['teacher'])} rounds, so load changes hit both alike.",
        "",
        "| | teacher | student | student / teacher |",
        "|---|---:|---:|---:|",
        f"| measured ms / frame | {m['teacher_ms']:.2f} | {m['student_ms']:.2f} | "
        f"{m['student_over_teacher']:.3f} (**{m['speedup']:.2f}x faster**) |",
    ]
    if p:
        lines.append(
            f"| predicted by the latency table | {p['predicted_before_ms']:.2f} | "
            f"{p['predicted_after_ms']:.2f} | "
            f"{p['predicted_after_ms'] / p['predicted_before_ms']:.3f} |"
        )
    return [*lines, ""]


# (label, evaluation summary key) of the metrics the INT8 guard holds to a budget
GUARDED: tuple[tuple[str, str], ...] = (
    ("det recall", "det_recall"),
    ("det mAP@0.5", "det_map50"),
    ("drivable mIoU", "drivable_miou"),
    ("lane IoU", "lane_iou"),
)


def deployed_table(q: dict | None) -> list[str]:
    """The student's FP32 / FP16 / INT8 exports scored on the val split through the runtime
    (what the INT8 guard measured), with the INT8 layers kept in FP16 and why."""
    if not q:
        return []
    if q.get("error"):
        return [
            "## Deployed student: FP32 / FP16 / INT8",
            "",
            f"INT8 not written: {q['error']}",
            "",
        ]
    scores, budgets = q["scores"], q["budgets_points"]
    names = [k for k in ("fp32", "fp16", "int8") if k in scores]
    rows = [
        "## Deployed student: FP32 / FP16 / INT8 exports, per task",
        "",
        f"Each export run through the torch-free runtime (ONNX Runtime CPU) and scored on "
        f"{q['guard_source']}; INT8 calibrated ({q['calibration']}) on {q['calib_images']} images "
        f"of {q['calib_source']}. Deltas in points against the FP32 export; budget = the most "
        "the INT8 guard lets a task drop.",
        "",
        "| metric (%) | "
        + " | ".join(n.upper() for n in names)
        + " | FP16 delta | INT8 delta | budget |",
        "|---|" + "---:|" * (len(names) + 3),
    ]
    ref = scores["fp32"]
    for label, key in GUARDED:
        if key not in ref:
            continue
        vals = " | ".join(_fmt(scores[n].get(key)) for n in names)
        dl = [
            f"{100 * (scores[n][key] - ref[key]):+.2f}" if n in scores else "n/a"
            for n in ("fp16", "int8")
        ]
        rows.append(f"| {label} | {vals} | {dl[0]} | {dl[1]} | -{budgets[key]} |")
    fb = q.get("fallback", [])
    rows += [
        "",
        f"INT8: {q['quantized_layers']} of {q['convs']} convs quantised "
        f"({100 * q['quantized_conv_share']:.0f}% of convs, "
        f"{100 * q['quantized_flops_share']:.0f}% of conv FLOPs); "
        f"{len(fb)} layer group(s) kept in FP16"
        + (": " + "; ".join(f"`{f['group']}` ({f['reason']})" for f in fb) if fb else "")
        + f". Guard: {q['models_scored']} models scored in {q.get('time_s', 0):.0f} s. INT8 "
        "speed is a TensorRT claim: ONNX Runtime CPU runs the Q/DQ graph as quantise-dequantise "
        "arithmetic (same numbers, no INT8 kernels), so it is not timed here.",
        "",
    ]
    return rows


def write_report(out: Path, data: dict) -> tuple[Path, Path]:
    """report.json + report.md from the demo's collected results."""
    teacher, student = data["metrics"]["teacher"], data["metrics"]["student"]
    size = data["size"]
    fh, fw = size.get("flops_input_hw") or data["imgsz"]
    lines = [
        "# mtc demo report",
        "",
        f"Data: {data['data']['description']}. Input {data['imgsz'][1]}x{data['imgsz'][0]}. "
        f"{data['data']['note']}",
        "",
        "## Size",
        "",
        "| | teacher | student | change |",
        "|---|---|---|---|",
        f"| parameters | {size['teacher_params']:,} | {size['student_params']:,} | "
        f"{-100 * size['param_reduction']:+.1f}% |",
        f"| GFLOPs @ {fw}x{fh} | {size['teacher_gflops']:.3f} | "
        f"{size['student_gflops']:.3f} | {-100 * size['flops_reduction']:+.1f}% |",
        "",
        "## Accuracy (same validation split)",
        "",
        *metrics_table(teacher, student),
        "",
        data["metrics"]["protocol"],
        "",
        "![metrics](metrics.png)",
        "",
        "## Export",
        "",
        "| model | artifact | size (MB) | parity / agreement |",
        "|---|---|---|---|",
        *[
            f"| {a['model']} | {a['name']} | {a['mb']:.2f} | {a['check']} |"
            for a in data["artifacts"]
        ],
        "",
        data["engine_note"],
        "",
        *deployed_table(data.get("deployed")),
        *side_by_side_latency(data.get("latency_side_by_side") or {}),
        "## Runtime latency (torch-free runtime)",
        "",
        *latency_table(data["latency"]),
        "",
        f"Machine: {data['machine']}. A frame's latency is the end-to-end time of the batch it "
        "rode in (preprocess + inference + postprocess), so batching trades latency for "
        "throughput. CPU timings on a shared machine are noisy: compare rows measured in this "
        "one run, not across runs.",
        "",
        "![latency](latency.png)",
        "",
        "## Overlays (teacher | student)",
        "",
        *[f"![{Path(p).stem}]({Path(p).relative_to(out).as_posix()})" for p in data["overlays"]],
        "",
        "## Settings",
        "",
        "```json",
        json.dumps(data["settings"], indent=2),
        "```",
        "",
        f"Stage times (s): {', '.join(f'{k} {v:.0f}' for k, v in data['timings'].items())}.",
        "",
    ]
    md = atomic_write_text(out / "report.md", "\n".join(lines))
    js = atomic_write_text(out / "report.json", json.dumps(data, indent=2, default=str) + "\n")
    return md, js
