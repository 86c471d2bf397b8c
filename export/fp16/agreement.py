"""FP16 ONNX vs FP32 ONNX, both in ONNX Runtime CPU: the numbers that say whether FP16 changed
decisions (mask pixels, matched boxes), not just values. Thresholds in `Fp16Thresholds`;
failing them is an error, so an FP16 artifact that would quietly cost accuracy never ships."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from export.config import Fp16Thresholds
from export.errors import Fp16Error
from export.onnx.deploy import DeploySpec
from runtime.boxes import box_iou
from runtime.io_names import DET_COUNT, DET_OUTPUT

MIN_BOX_AREA = 1.0  # px^2


@dataclass
class Fp16Report:
    mask_agreement_pct: dict[str, float]
    mean_iou: float | None
    min_iou: float | None
    boxes_compared: int
    score_max_delta: float
    logits_max_abs: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        return {"ok": self.ok, **asdict(self)}


def _proper(boxes: np.ndarray) -> np.ndarray:
    """IoU says nothing about boxes under 1 px^2 (0 even against themselves): left out."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) >= MIN_BOX_AREA


def _dense_ious(a: np.ndarray, b: np.ndarray, k: int) -> tuple[list[float], float]:
    """Top-k FP32 candidates, index-aligned: row i of FP16 is the same anchor as row i of FP32."""
    ious, delta = [], 0.0
    for ra, rb in zip(a, b):
        top = np.argsort(-ra[:, 4], kind="stable")[:k]
        top = top[_proper(ra[top, :4])]
        ious += np.diag(box_iou(ra[top, :4], rb[top, :4])).tolist()
        delta = max(delta, float(np.abs(ra[top, 4] - rb[top, 4]).max(initial=0.0)))
    return ious, delta


def _nms_ious(a: dict, b: dict, k: int) -> tuple[list[float], float]:
    """Rows after NMS, FP32 best-first: each takes the unused FP16 row of its class with the
    highest IoU; below 0.5 it counts as unmatched (IoU 0) and adds no score delta."""
    ious, delta = [], 0.0
    for i in range(len(a[DET_COUNT])):
        ra = a[DET_OUTPUT][i, : min(int(a[DET_COUNT][i]), k)]
        ra = ra[_proper(ra[:, :4])]
        rb = b[DET_OUTPUT][i, : int(b[DET_COUNT][i])]
        iou = box_iou(ra[:, :4], rb[:, :4]) * (ra[:, None, 5] == rb[None, :, 5])
        used = np.zeros(len(rb), bool)
        for r in range(len(ra)):
            cand = np.where(used, -1.0, iou[r])
            j = int(cand.argmax()) if len(cand) else -1
            if j < 0 or cand[j] < 0.5:
                ious.append(0.0)
                continue
            used[j] = True
            ious.append(float(cand[j]))
            delta = max(delta, abs(float(ra[r, 4] - rb[j, 4])))
    return ious, delta


def _masks(
    a: dict, b: dict, seg_argmax: bool, tasks: tuple[str, ...]
) -> tuple[dict[str, float], dict[str, float]]:
    agree, logit_err = {}, {}
    for t in tasks:
        ma, mb = (a[t], b[t]) if seg_argmax else (a[t].argmax(1), b[t].argmax(1))
        agree[t] = 100.0 * float(np.mean(ma == mb))
        if not seg_argmax:
            logit_err[t] = float(np.abs(a[t] - b[t]).max(initial=0.0))
    return agree, logit_err


def fp16_agreement(
    run32: Callable[[np.ndarray], dict],
    run16: Callable[[np.ndarray], dict],
    cases: list[tuple[str, np.ndarray]],
    spec: DeploySpec,
    th: Fp16Thresholds,
) -> Fp16Report:
    """Both runners return graph outputs; `spec` says which there are (and decodes a raw
    detection output the way the runtime does before boxes are compared)."""
    ious: list[float] = []
    delta = 0.0
    agree: dict[str, list[float]] = {t: [] for t in spec.seg_tasks}
    logit_err: dict[str, float] = {}
    for _, images in cases:
        a, b = spec.checkable(run32(images)), spec.checkable(run16(images))
        if spec.has_det:
            got, d = (
                _nms_ious(a, b, th.topk)
                if spec.nms_in_graph
                else _dense_ious(a[DET_OUTPUT], b[DET_OUTPUT], th.topk)
            )
            ious += got
            delta = max(delta, d)
        ag, le = _masks(a, b, spec.seg_argmax, spec.seg_tasks)
        for t in spec.seg_tasks:
            agree[t].append(ag[t])
            logit_err[t] = max(logit_err.get(t, 0.0), le.get(t, 0.0))
    rep = Fp16Report(
        {t: min(v) for t, v in agree.items()},
        float(np.mean(ious)) if ious else None,
        float(np.min(ious)) if ious else None,
        len(ious),
        delta,
        logit_err if not spec.seg_argmax else {},
    )
    rep.failures = _failures(rep, th)
    return rep


def _failures(rep: Fp16Report, th: Fp16Thresholds) -> list[str]:
    out = [
        f"{t} mask agreement {v:.3f}% < {th.min_mask_agreement_pct}%"
        for t, v in rep.mask_agreement_pct.items()
        if v < th.min_mask_agreement_pct
    ]
    if rep.mean_iou is not None and rep.mean_iou < th.min_mean_iou:
        out.append(f"mean matched-box IoU {rep.mean_iou:.4f} < {th.min_mean_iou}")
    if rep.score_max_delta > th.max_score_delta:
        out.append(f"score max delta {rep.score_max_delta:.4f} > {th.max_score_delta}")
    return out


def require_fp16_agreement(rep: Fp16Report, what: str = "FP16 ONNX") -> None:
    if not rep.ok:
        raise Fp16Error(
            f"{what} disagrees with FP32: {'; '.join(rep.failures)}; keep more ops in FP32 "
            "(--fp16-keep-resize-fp32), loosen the thresholds deliberately, or export with "
            "--no-fp16-onnx and --engine fp32"
        )
