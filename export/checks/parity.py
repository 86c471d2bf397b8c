"""The parity check: ONNX Runtime vs PyTorch, per output, on inputs other than the tracing input.

Tolerances per output (see `ParityTolerances`): boxes by `atol + rtol * max|box|` and scores by
absolute difference, over all N candidates (the decode is bounded, so every row is comparable);
argmax masks must be identical except where PyTorch's top two logits are closer than the tie
band (a legitimate flip); logits by `atol + rtol * max|logit|`; with NMS in the graph, counts
are paired without regard to order, and a row without a partner must be explained by a near-tie
(score at the threshold, or NMS choosing between boxes float error cannot separate)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from export.config import ParityTolerances
from export.errors import ParityError
from export.onnx.deploy import DeploySpec, DeployWrapper
from runtime.boxes import box_iou
from runtime.io_names import DET_COUNT, DET_OUTPUT


@dataclass
class OutputParity:
    name: str
    metric: str
    value: float
    tol: float
    ok: bool
    detail: str = ""


@dataclass
class ParityReport:
    outputs: dict[str, OutputParity]
    cases: list[str]

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outputs.values())

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "cases": self.cases,
            "outputs": {k: asdict(v) for k, v in self.outputs.items()},
        }

    def failures(self) -> str:
        bad = [o for o in self.outputs.values() if not o.ok]
        return "; ".join(
            f"{o.name}: {o.metric} {o.value:.3g} > {o.tol:.3g} {o.detail}".strip() for o in bad
        )


def torch_reference(
    wrapper: DeployWrapper, images: np.ndarray
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(graph outputs, seg logits) of one PyTorch pass."""
    with torch.no_grad():
        raw = wrapper.raw(torch.from_numpy(images))
        final = wrapper.finish(raw)
    outs = {n: t.numpy() for n, t in zip(wrapper.spec.output_names, final)}
    return wrapper.spec.checkable(outs), {t: raw[t].numpy() for t in wrapper.spec.seg_tasks}


def top2_margin(logits: np.ndarray) -> np.ndarray:
    """[B, C, H, W] -> [B, H, W] gap between the best and second-best class logit."""
    part = np.sort(logits, axis=1)
    return part[:, -1] - part[:, -2]


def _mask(
    name: str, ref: np.ndarray, got: np.ndarray, logits: np.ndarray, tol: ParityTolerances
) -> OutputParity:
    diff = ref != got
    band = tol.mask_tie_atol + tol.mask_tie_rtol * float(np.abs(logits).max(initial=0.0))
    ties = top2_margin(logits.astype(np.float64)) <= band
    bad = int(np.count_nonzero(diff & ~ties))
    excused = int(np.count_nonzero(diff & ties))
    return OutputParity(
        name,
        "mismatched_pixels",
        float(bad),
        0.0,
        bad == 0,
        f"({excused} tie pixels excused)" if excused else "",
    )


def _scaled(atol: float, rtol: float, ref: np.ndarray) -> float:
    return atol + rtol * float(np.abs(ref).max(initial=0.0))


def _logits(name: str, ref: np.ndarray, got: np.ndarray, tol: ParityTolerances) -> OutputParity:
    err = float(np.abs(got.astype(np.float64) - ref).max(initial=0.0))
    allowed = _scaled(tol.logits_atol, tol.logits_rtol, ref)
    return OutputParity(name, "max_abs", err, allowed, err <= allowed)


def _box(box_err: float, ref_boxes: np.ndarray, tol: ParityTolerances) -> OutputParity:
    allowed = _scaled(tol.box_atol, tol.box_rtol, ref_boxes)
    return OutputParity(f"{DET_OUTPUT}.boxes", "max_abs_px", box_err, allowed, box_err <= allowed)


def _det_dense(ref: np.ndarray, got: np.ndarray, tol: ParityTolerances) -> list[OutputParity]:
    box = float(np.abs(got[..., :4] - ref[..., :4]).max(initial=0.0))
    score = float(np.abs(got[..., 4] - ref[..., 4]).max(initial=0.0))
    cls_bad = int(np.count_nonzero(got[..., 5] != ref[..., 5]))
    return [
        _box(box, ref[..., :4], tol),
        OutputParity(
            f"{DET_OUTPUT}.scores", "max_abs", score, tol.score_atol, score <= tol.score_atol
        ),
        OutputParity(f"{DET_OUTPUT}.classes", "mismatched", float(cls_bad), 0.0, cls_bad == 0),
    ]


def match_rows(
    a: np.ndarray, b: np.ndarray, box_tol: float = np.inf, score_tol: float = np.inf
) -> list[tuple[int, int]]:
    """Greedy order-free pairing of detection rows (x1 y1 x2 y2 score class) by smallest
    difference; a pair must have the same class and be within the tolerances."""
    if len(a) == 0 or len(b) == 0:
        return []
    box = np.abs(a[:, None, :4] - b[None, :, :4]).max(-1)
    score = np.abs(a[:, None, 4] - b[None, :, 4])
    ok = (box <= box_tol) & (score <= score_tol) & (a[:, None, 5] == b[None, :, 5])
    cost = np.where(ok, box + score, np.inf)
    pairs, used = [], np.zeros(len(b), bool)
    for i in range(len(a)):
        row = np.where(used, np.inf, cost[i])
        j = int(row.argmin())
        if np.isfinite(row[j]):
            used[j] = True
            pairs.append((i, j))
    return pairs


def _excused(
    r: np.ndarray,
    other: np.ndarray,
    conf: float,
    iou_thr: float,
    cut: float | None,
    tol: ParityTolerances,
) -> bool:
    """An unpaired row is legitimate when float error can decide it: its score is at the
    threshold or at the max_det cut of the other side (`cut`: its lowest kept score when it is
    full), or NMS met a near-tie (a same-class overlapping row of about the same score took its
    place, or an overlap right at the IoU threshold)."""
    if r[4] <= conf + tol.score_atol or (cut is not None and r[4] <= cut + tol.score_atol):
        return True
    if len(other) == 0:
        return False
    iou = box_iou(r[None, :4], other[:, :4])[0]
    same = other[:, 5] == r[5]
    swap = (iou > iou_thr - 1e-3) & (np.abs(other[:, 4] - r[4]) <= tol.score_atol)
    edge = np.abs(iou - iou_thr) <= 1e-3
    return bool(np.any(same & (swap | edge)))


def _det_nms(ref: dict, got: dict, spec: DeploySpec, tol: ParityTolerances) -> list[OutputParity]:
    """Rows paired order-free within tolerance; unpaired rows must be explained by `_excused`."""
    rc, gc = ref[DET_COUNT].astype(int), got[DET_COUNT].astype(int)
    box = score = 0.0
    bad = excused = 0
    for b in range(len(rc)):
        ra = ref[DET_OUTPUT][b, : rc[b]].astype(np.float64)
        ga = got[DET_OUTPUT][b, : gc[b]].astype(np.float64)
        box_tol = _scaled(tol.box_atol, tol.box_rtol, ref[DET_OUTPUT][..., :4])
        pairs = match_rows(ra, ga, box_tol, tol.score_atol)
        for i, j in pairs:
            box = max(box, float(np.abs(ra[i, :4] - ga[j, :4]).max()))
            score = max(score, float(abs(ra[i, 4] - ga[j, 4])))
        k = ref[DET_OUTPUT].shape[1]
        cut_g = float(ga[:, 4].min()) if len(ga) == k else None
        cut_r = float(ra[:, 4].min()) if len(ra) == k else None
        lone = [(r, ga, cut_g) for r in np.delete(ra, [i for i, _ in pairs], 0)]
        lone += [(r, ra, cut_r) for r in np.delete(ga, [j for _, j in pairs], 0)]
        for r, other, cut in lone:
            if _excused(r, other, spec.conf_thres, spec.iou_thres, cut, tol):
                excused += 1
            else:
                bad += 1
    detail = f"(torch {rc.tolist()} vs onnx {gc.tolist()}; {excused} near-tie rows excused)"
    return [
        OutputParity(
            DET_COUNT, "unpaired_rows", float(bad), 0.0, bad == 0, detail if bad or excused else ""
        ),
        _box(box, ref[DET_OUTPUT][..., :4], tol),
        OutputParity(
            f"{DET_OUTPUT}.scores", "max_abs", score, tol.score_atol, score <= tol.score_atol
        ),
    ]


def compare_case(
    ref: dict[str, np.ndarray],
    logits: dict[str, np.ndarray],
    got: dict[str, np.ndarray],
    spec: DeploySpec,
    tol: ParityTolerances,
) -> list[OutputParity]:
    out: list[OutputParity] = []
    if spec.has_det:
        out = (
            _det_nms(ref, got, spec, tol)
            if spec.nms_in_graph
            else _det_dense(ref[DET_OUTPUT], got[DET_OUTPUT], tol)
        )
    for t in spec.seg_tasks:
        out.append(
            _mask(t, ref[t], got[t], logits[t], tol)
            if spec.seg_argmax
            else _logits(t, ref[t], got[t], tol)
        )
    return out


def _worst(reports: list[OutputParity]) -> dict[str, OutputParity]:
    worst: dict[str, OutputParity] = {}
    for r in reports:
        cur = worst.get(r.name)
        if cur is None or (cur.ok and not r.ok) or (cur.ok == r.ok and r.value > cur.value):
            worst[r.name] = r
    return worst


def check_parity(
    wrapper: DeployWrapper,
    run_onnx: Callable[[np.ndarray], dict],
    cases: list[tuple[str, np.ndarray]],
    tol: ParityTolerances,
) -> ParityReport:
    """Worst value per output over all cases. Does not raise: see `require_parity`."""
    spec = wrapper.spec
    results: list[OutputParity] = []
    for _, images in cases:
        ref, logits = torch_reference(wrapper, images)
        results += compare_case(ref, logits, spec.checkable(run_onnx(images)), spec, tol)
    return ParityReport(_worst(results), [label for label, _ in cases])


def require_parity(report: ParityReport, what: str = "ONNX Runtime vs PyTorch") -> None:
    if not report.ok:
        raise ParityError(
            f"{what} parity failed on {', '.join(report.cases)}: {report.failures()}; "
            "nothing was written. Re-export with --simplifier none to see if the simplifier "
            "is at fault, or report the model"
        )
