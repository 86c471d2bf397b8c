"""Network outputs -> per-frame results in the frame's own pixels.

Detection: confidence filter + NMS when the graph has no NMS (runtime.boxes, the same code the
metrics use), or the first `det_count` rows when it has. Boxes and masks are mapped back through
the frame's letterbox, so results line up with the frame the camera delivered.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runtime.boxes import batched_nms, postprocess_detections
from runtime.errors import MtcError
from runtime.geometry import Letterbox, boxes_from_letterbox, unletterbox_mask
from runtime.io_names import DET_COUNT, DET_LAYOUT_CXCYWH, DET_LAYOUT_XYXY, DET_OUTPUT, SEG_LOGITS
from runtime.sidecar import DetInfo, Sidecar
from runtime.sources import FrameId
from runtime.spec import TASK_DRIVABLE, TASK_LANE

MAX_NMS_CANDIDATES = 30000


class OutputMismatchError(MtcError):
    """The artifact's outputs are not what its sidecar promises."""


@dataclass(frozen=True, eq=False)
class FrameResult:
    frame_id: FrameId
    boxes: np.ndarray  # (K, 4) float32 x1, y1, x2, y2 in frame pixels
    scores: np.ndarray  # (K,) float32
    classes: np.ndarray  # (K,) int64
    drivable: np.ndarray | None  # (H, W) uint8 {0, 1}, frame size
    lane: np.ndarray | None  # (H, W) uint8 {0, 1}, frame size
    timing: dict[str, float] = field(default_factory=dict)  # ms of the batch this frame rode in

    def summary(self) -> dict[str, Any]:
        """JSON-friendly, without the masks."""
        return {
            "frame_id": self.frame_id,
            "boxes": np.round(self.boxes, 2).tolist(),
            "scores": np.round(self.scores, 4).tolist(),
            "classes": self.classes.tolist(),
        }


def _rows_xyxy(det: np.ndarray, info: DetInfo) -> np.ndarray:
    """[N, 6] x1,y1,x2,y2,score,class -> kept rows after confidence filter and class-aware NMS."""
    d = det[det[:, 4] > info.conf_thres].astype(np.float64)
    if len(d) > MAX_NMS_CANDIDATES:
        d = d[np.argsort(-d[:, 4], kind="stable")[:MAX_NMS_CANDIDATES]]
    keep = batched_nms(d[:, :4], d[:, 4], d[:, 5], info.iou_thres, info.max_det)
    return d[keep]


def _rows_cxcywh(det: np.ndarray, info: DetInfo) -> np.ndarray:
    """The model's own decoded layout [N, 5+nc]; the shared YOLO postprocess handles it."""
    return postprocess_detections(det[None], info.conf_thres, info.iou_thres, info.max_det)[0]


# det layout -> rows [K, 6] (x1,y1,x2,y2,score,class in input pixels) for one image.
DET_DECODERS: dict[str, Callable[[np.ndarray, DetInfo], np.ndarray]] = {
    DET_LAYOUT_XYXY: _rows_xyxy,
    DET_LAYOUT_CXCYWH: _rows_cxcywh,
}


class Postprocessor:
    def __init__(self, sidecar: Sidecar) -> None:
        det = sidecar.det
        if det is not None and not det.decoded_in_graph:
            raise OutputMismatchError(
                "sidecar says det.decoded_in_graph is false: the runtime needs box decoding inside "
                "the graph (mtc-export's default); re-export without disabling it"
            )
        if det is not None and det.nms_in_graph and det.layout != DET_LAYOUT_XYXY:
            raise OutputMismatchError(
                f"NMS in the graph needs det.layout {DET_LAYOUT_XYXY!r}, sidecar says {det.layout!r}"
            )
        self.det = det
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
            full = {t: unletterbox_mask(m[i], lb) for t, m in masks.items()}
            results.append(
                FrameResult(
                    frame_id=fid,
                    boxes=boxes_from_letterbox(rows[:, :4], lb).astype(np.float32),
                    scores=rows[:, 4].astype(np.float32),
                    classes=rows[:, 5].astype(np.int64),
                    drivable=full.get(TASK_DRIVABLE),
                    lane=full.get(TASK_LANE),
                    timing=dict(timing or {}),
                )
            )
        return results

    def _detections(self, outputs: dict[str, np.ndarray], n: int) -> list[np.ndarray]:
        if self.det is None:
            return [np.zeros((0, 6))] * n
        det = outputs[DET_OUTPUT]
        width_ok = det.shape[-1] == 6 if self.det.layout == DET_LAYOUT_XYXY else det.shape[-1] >= 6
        if det.ndim != 3 or det.shape[0] != n or not width_ok:
            raise OutputMismatchError(
                f"output {DET_OUTPUT!r} has shape {list(det.shape)}; layout {self.det.layout!r} "
                f"expects [{n}, N, 6{'' if self.det.layout == DET_LAYOUT_XYXY else '+'}]"
            )
        if self.det.nms_in_graph:
            counts = np.asarray(outputs[DET_COUNT]).reshape(n).clip(0, det.shape[1])
            return [det[i, : int(counts[i])].astype(np.float64) for i in range(n)]
        decode = DET_DECODERS[self.det.layout]
        return [decode(det[i], self.det) for i in range(n)]

    def _masks(self, out: np.ndarray, task: str) -> np.ndarray:
        if self.seg_logits:
            if out.ndim != 4:
                raise OutputMismatchError(f"output {task!r} {list(out.shape)}: expected [B,C,H,W]")
            return out.argmax(axis=1).astype(np.uint8)
        if out.ndim != 3:
            raise OutputMismatchError(f"output {task!r} {list(out.shape)}: expected [B,H,W] uint8")
        return out.astype(np.uint8, copy=False)
