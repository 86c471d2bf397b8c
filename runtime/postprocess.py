"""Network outputs -> per-frame results in the frame's own pixels.

Detection, with the deploy thresholds (`DeployThresholds`: the sidecar's `det.deploy`, or what the
caller overrides): confidence filter, then at most `topk` best candidates per image, then
class-aware greedy NMS that stops at `max_det` kept boxes (`runtime.boxes.nms_early_exit`, same
result as the metrics' `nms`). Its cost is bounded by topk * max_det whatever the scene: a frame
where every anchor fires costs what a typical one costs. With NMS in the graph, the first
`det_count` rows, filtered by the deploy confidence and cut at max_det.

Boxes are mapped back through the letterbox at once (cheap); masks are mapped back to frame size
only when read (`FrameResult.drivable` / `.lane`, cached), so a caller that never reads them (a
benchmark, a consumer of boxes only, or one that wants the network-size mask from `mask_net`)
never pays for two frame-size resizes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runtime.boxes import batched_nms_early_exit, topk_indices, xywh_to_xyxy
from runtime.decoders import get_decoder
from runtime.errors import MtcError
from runtime.geometry import Letterbox, boxes_from_letterbox, crop_padding, unletterbox_mask
from runtime.io_names import DET_COUNT, DET_LAYOUT_CXCYWH, DET_LAYOUT_XYXY, DET_OUTPUT, SEG_LOGITS
from runtime.sidecar import DeployThresholds, Sidecar
from runtime.sources import FrameId
from runtime.spec import TASK_DRIVABLE, TASK_LANE


class OutputMismatchError(MtcError):
    """The artifact's outputs are not what its sidecar promises."""


@dataclass(frozen=True, eq=False)
class FrameResult:
    frame_id: FrameId
    boxes: np.ndarray  # (K, 4) float32 x1, y1, x2, y2 in frame pixels
    scores: np.ndarray  # (K,) float32
    classes: np.ndarray  # (K,) int64
    masks_net: dict[str, np.ndarray] = field(default_factory=dict)  # task -> network-size mask
    letterbox: Letterbox | None = None  # maps masks_net back to the frame
    timing: dict[str, float] = field(default_factory=dict)  # ms by stage (see runtime.latency)
    _full: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    camera: int = 0  # index of the source the frame came from (run(..., sources=[...]))

    def mask(self, task: str) -> np.ndarray | None:
        """(H, W) uint8 {0, 1} at frame size; mapped back on the first read, then cached."""
        if not self.masks_net or task not in self.masks_net:
            return None
        full = self._full.get(task)
        if full is None:
            m = self.masks_net[task]
            full = m if self.letterbox is None else unletterbox_mask(m, self.letterbox)
            self._full[task] = full
        return full

    def mask_net(self, task: str) -> np.ndarray | None:
        """The mask at network resolution with the letterbox padding cut off (no resize)."""
        m = self.masks_net.get(task)
        return m if m is None or self.letterbox is None else crop_padding(m, self.letterbox)

    @property
    def drivable(self) -> np.ndarray | None:
        return self.mask(TASK_DRIVABLE)

    @property
    def lane(self) -> np.ndarray | None:
        return self.mask(TASK_LANE)

    def summary(self) -> dict[str, Any]:
        """JSON-friendly, without the masks."""
        return {
            "frame_id": self.frame_id,
            "boxes": np.round(self.boxes, 2).tolist(),
            "scores": np.round(self.scores, 4).tolist(),
            "classes": self.classes.tolist(),
        }


def select_rows(rows: np.ndarray, t: DeployThresholds) -> np.ndarray:
    """[N, 6] x1,y1,x2,y2,score,class -> kept rows (float64, best first): score > conf, the
    `topk` best, class-aware NMS up to `max_det`."""
    idx = np.flatnonzero(rows[:, 4] > t.conf_thres)
    idx = idx[topk_indices(rows[idx, 4], t.topk)]
    d = rows[idx].astype(np.float64)
    return d[batched_nms_early_exit(d[:, :4], d[:, 4], d[:, 5], t.iou_thres, t.max_det)]


def _rows_xyxy(det: np.ndarray, t: DeployThresholds) -> np.ndarray:
    return select_rows(det, t)


def _rows_cxcywh(det: np.ndarray, t: DeployThresholds) -> np.ndarray:
    """The model's own decoded layout [N, 5+nc] (cx,cy,w,h, obj, class probabilities): score =
    obj * best class, as in `runtime.boxes.postprocess_detections`; only rows above conf are
    converted."""
    cls_scores = det[:, 5:] * det[:, 4:5]
    cls = cls_scores.argmax(1)
    score = np.take_along_axis(cls_scores, cls[:, None], 1)[:, 0]
    m = np.flatnonzero(score > t.conf_thres)
    rows = np.column_stack([xywh_to_xyxy(det[m, :4]), score[m], cls[m]])
    return select_rows(rows, t)


# det layout -> rows [K, 6] (x1,y1,x2,y2,score,class in input pixels) for one image.
DET_DECODERS: dict[str, Callable[[np.ndarray, DeployThresholds], np.ndarray]] = {
    DET_LAYOUT_XYXY: _rows_xyxy,
    DET_LAYOUT_CXCYWH: _rows_cxcywh,
}


class Postprocessor:
    """`thresholds=None` takes the sidecar's deploy thresholds (`det.deploy`)."""

    def __init__(self, sidecar: Sidecar, thresholds: DeployThresholds | None = None) -> None:
        det = sidecar.det
        self.input_hw = tuple(sidecar.preprocess.input_hw)
        # Raw detection output (decoded_in_graph false): the sidecar's decoder turns it into
        # candidate rows (cx, cy, w, h, obj, class scores) here, in numpy.
        self.decoder = (
            get_decoder(det.decoder) if det is not None and not det.decoded_in_graph else None
        )
        self.decoder_params = det.decoder_params() if self.decoder is not None else {}  # type: ignore[union-attr]
        if self.decoder is not None and (det.nms_in_graph or det.layout != DET_LAYOUT_CXCYWH):  # type: ignore[union-attr]
            raise OutputMismatchError(
                "sidecar says det.decoded_in_graph is false: a raw detection output needs "
                f"det.layout {DET_LAYOUT_CXCYWH!r} and no NMS in the graph"
            )
        if det is not None and det.nms_in_graph and det.layout != DET_LAYOUT_XYXY:
            raise OutputMismatchError(
                f"NMS in the graph needs det.layout {DET_LAYOUT_XYXY!r}, sidecar says {det.layout!r}"
            )
        self.det = det
        self.thresholds = thresholds or (det.deploy if det is not None else DeployThresholds())
        self.seg_tasks = sidecar.seg.tasks if sidecar.seg else ()
        self.seg_logits = sidecar.seg is not None and sidecar.seg.output == SEG_LOGITS

    def required_outputs(self) -> list[str]:
        names = [DET_OUTPUT] if self.det else []
        names += [DET_COUNT] if self.det and self.det.nms_in_graph else []
        return names + list(self.seg_tasks)

    def check_outputs(self, available: Sequence[str]) -> None:
        missing = [n for n in self.required_outputs() if n not in available]
        if missing:
            raise OutputMismatchError(
                f"the sidecar promises outputs {self.required_outputs()} but the artifact lacks "
                f"{missing} (it has {list(available)}); re-export the pair together"
            )

    def __call__(
        self,
        outputs: dict[str, np.ndarray],
        letterboxes: Sequence[Letterbox],
        frame_ids: Sequence[FrameId],
        timing: dict[str, float] | None = None,
    ) -> list[FrameResult]:
        n = len(frame_ids)
        dets = self._detections(outputs, n)
        masks = {t: self._masks(outputs[t], t) for t in self.seg_tasks}
        results = []
        for i, (fid, lb) in enumerate(zip(frame_ids, letterboxes)):
            rows = dets[i]
            results.append(
                FrameResult(
                    frame_id=fid,
                    boxes=boxes_from_letterbox(rows[:, :4], lb).astype(np.float32),
                    scores=rows[:, 4].astype(np.float32),
                    classes=rows[:, 5].astype(np.int64),
                    masks_net={t: m[i] for t, m in masks.items()},
                    letterbox=lb,
                    timing=dict(timing or {}),
                )
            )
        return results

    def _detections(self, outputs: dict[str, np.ndarray], n: int) -> list[np.ndarray]:
        if self.det is None:
            return [np.zeros((0, 6))] * n
        det = outputs[DET_OUTPUT]
        if self.decoder is not None:
            det = self.decoder.decode(det, self.input_hw, self.decoder_params)  # type: ignore[arg-type]
        width_ok = det.shape[-1] == 6 if self.det.layout == DET_LAYOUT_XYXY else det.shape[-1] >= 6
        if det.ndim != 3 or det.shape[0] != n or not width_ok:
            raise OutputMismatchError(
                f"output {DET_OUTPUT!r} has shape {list(det.shape)}; layout {self.det.layout!r} "
                f"expects [{n}, N, 6{'' if self.det.layout == DET_LAYOUT_XYXY else '+'}]"
            )
        t = self.thresholds
        if self.det.nms_in_graph:  # rows are best first; conf and max_det can only tighten
            counts = np.asarray(outputs[DET_COUNT]).reshape(n).clip(0, det.shape[1])
            kept = [det[i, : int(counts[i])].astype(np.float64) for i in range(n)]
            return [k[k[:, 4] > t.conf_thres][: t.max_det] for k in kept]
        decode = DET_DECODERS[self.det.layout]
        return [decode(det[i], t) for i in range(n)]

    def _masks(self, out: np.ndarray, task: str) -> np.ndarray:
        if self.seg_logits:
            if out.ndim != 4:
                raise OutputMismatchError(f"output {task!r} {list(out.shape)}: expected [B,C,H,W]")
            return out.argmax(axis=1).astype(np.uint8)
        if out.ndim != 3:
            raise OutputMismatchError(f"output {task!r} {list(out.shape)}: expected [B,H,W] uint8")
        return out.astype(np.uint8, copy=False)
