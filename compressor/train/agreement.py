"""How far a deployed artifact's outputs stray from a reference artifact's (the FP32 export), per
task, on the same frames: the INT8 guard's dense measure of what quantising a layer does.

A task metric on a few dozen frames moves by points when one layer is quantised (a box crosses
IoU 0.5, a detection swaps rank), so it cannot rank 40 layer groups. Agreement with the
reference counts every box and every pixel, so it ranks them, and it needs no ground truth:

- detection: a box's agreement with a box of the same class in the other output is
  IoU x min(s, s') / max(s, s') (s, s': the two scores), and each box takes its best. The
  disagreement is 1 - the score-weighted mean agreement, taken both ways (reference -> other
  and back) and averaged, so losing a box and inventing one both count; low-score candidates
  weigh little.
- segmentation: 1 - IoU between the two masks of each foreground class over all frames, averaged
  over the classes.

Both are in [0, 1]; 0 is identical output. Frames go through the runtime's postprocess at the
evaluation thresholds, as `score` does, so any model whose artifact `mtc-eval` scores works.
"""

from __future__ import annotations

import numpy as np

from compressor.train.eval_artifact import EvalSet, Infer, batch_results
from compressor.train.evaluate import EvalConfig
from runtime.boxes import box_iou
from runtime.postprocess import FrameResult
from runtime.sidecar import Sidecar
from runtime.spec import TASK_DET


def _box_agreement(a: FrameResult, b: FrameResult) -> tuple[float, float]:
    """(score-weighted agreement of a's boxes with their best match among b's, a's total
    score). A box's agreement with a box of another class is 0; with an identical box, 1 (even
    a degenerate one, whose IoU is undefined)."""
    total = float(a.scores.astype(np.float64).sum())
    if len(a.scores) == 0 or len(b.scores) == 0:
        return 0.0, total
    same = np.all(a.boxes[:, None, :] == b.boxes[None, :, :], axis=-1)
    iou = np.where(same, 1.0, box_iou(a.boxes, b.boxes))
    sa, sb = a.scores.astype(np.float64)[:, None], b.scores.astype(np.float64)[None, :]
    ratio = np.minimum(sa, sb) / np.maximum(np.maximum(sa, sb), 1e-12)
    agree = iou * ratio * (a.classes[:, None] == b.classes[None, :])
    return float((sa[:, 0] * agree.max(1)).sum()), total


class Agreement:
    """Disagreement of an artifact with the reference outputs, per task (`__call__`)."""

    def __init__(
        self,
        reference: Infer,
        evalset: EvalSet,
        sidecar: Sidecar,
        cfg: EvalConfig = EvalConfig(),
        batch: int = 8,
    ) -> None:
        self.evalset, self.sidecar, self.cfg, self.batch = evalset, sidecar, cfg, batch
        self.ref = self._results(reference)
        self.seg_classes = (
            {t: sidecar.seg.num_classes(t) for t in sidecar.seg.tasks} if sidecar.seg else {}
        )
        self.tasks: tuple[str, ...] = ((TASK_DET,) if sidecar.det is not None else ()) + tuple(
            self.seg_classes
        )

    def _results(self, infer: Infer) -> list[FrameResult]:
        batches = batch_results(infer, self.evalset, self.sidecar, self.cfg, self.batch)
        return [r for _, results in batches for r in results]

    def __call__(self, infer: Infer) -> dict[str, float]:
        return self.of_results(self._results(infer))

    def of_results(self, results: list[FrameResult]) -> dict[str, float]:
        """The disagreement of results already made for every frame of the set, in order."""
        det = np.zeros(4)  # agreement, weight (ref -> other), agreement, weight (other -> ref)
        inter = {t: np.zeros(n) for t, n in self.seg_classes.items()}
        union = {t: np.zeros(n) for t, n in self.seg_classes.items()}
        for r, o in zip(self.ref, results):
            det += (*_box_agreement(r, o), *_box_agreement(o, r))
            for t, n in self.seg_classes.items():
                a, b = r.masks_net[t], o.masks_net[t]
                for c in range(1, n):
                    pa, pb = a == c, b == c
                    inter[t][c] += np.count_nonzero(pa & pb)
                    union[t][c] += np.count_nonzero(pa | pb)
        out: dict[str, float] = {}
        if self.sidecar.det is not None:  # both ways, weighted by score; no box either side: 0
            weight = det[1] + det[3]
            out[TASK_DET] = 1.0 - (det[0] + det[2]) / weight if weight > 0 else 0.0
        for t, n in self.seg_classes.items():
            ious = [inter[t][c] / union[t][c] if union[t][c] > 0 else 1.0 for c in range(1, n)]
            out[t] = 1.0 - float(np.mean(ious)) if ious else 0.0
        return out


__all__ = ["Agreement"]
