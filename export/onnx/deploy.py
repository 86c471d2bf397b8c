"""The deploy wrapper: what the exported graph computes on top of the model.

The model's eval output stays as it is for training and evaluation code; the wrapper turns it
into what a vehicle computer wants to receive: boxes as x1 y1 x2 y2 + score + class in input
pixels (anchors and strides are already baked into the model's decode), optionally NMS in the
graph, and uint8 argmax masks (8x fewer device-to-host bytes than float32 logits of 2 classes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from export.onnx.nms import nms_fixed
from runtime.decoders import get_decoder
from runtime.io_names import DET_COUNT, DET_OUTPUT
from runtime.spec import NMS_CONF, NMS_IOU, NMS_MAX_DET, SEG_TASKS, TASK_DET


@dataclass(frozen=True)
class DeploySpec:
    """What the graph outputs, from the model spec and the export options. `det_decoder` (no
    default: the model spec names it): None = no detection task; with `det_raw` the model's raw
    detection output goes out as it is and the runtime decodes it with that decoder
    (`decoder_params`, at `input_hw`)."""

    nms_in_graph: bool = False
    seg_argmax: bool = True
    conf_thres: float = NMS_CONF
    iou_thres: float = NMS_IOU
    max_det: int = NMS_MAX_DET
    det_decoder: str | None = field(kw_only=True)
    det_raw: bool = False
    seg_tasks: tuple[str, ...] = SEG_TASKS
    input_hw: tuple[int, int] = (0, 0)
    decoder_params: dict[str, Any] = field(default_factory=dict)

    @property
    def has_det(self) -> bool:
        return self.det_decoder is not None

    @property
    def output_names(self) -> tuple[str, ...]:
        """Graph outputs, in order; the same strings are runtime result keys."""
        det: tuple[str, ...] = ()
        if self.has_det:
            det = (DET_OUTPUT, DET_COUNT) if self.nms_in_graph else (DET_OUTPUT,)
        return det + tuple(self.seg_tasks)

    def checkable(self, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Graph outputs as the checks compare them: a raw detection output decoded by the
        runtime's numpy decoder into rows [B, N, 6] (x1 y1 x2 y2 score class), the layout a
        graph-decoded one already has."""
        if not (self.has_det and self.det_raw):
            return outputs
        dec = get_decoder(self.det_decoder)  # type: ignore[arg-type]
        rows = dec.decode(outputs[DET_OUTPUT], self.input_hw, self.decoder_params)
        xyxy = decoded_to_xyxy(torch.from_numpy(rows)).numpy()
        return {**outputs, DET_OUTPUT: xyxy}


def decoded_to_xyxy(pred: torch.Tensor) -> torch.Tensor:
    """[B, N, 5+nc] (cx cy w h obj cls...) -> [B, N, 6] (x1 y1 x2 y2 score class); score is
    obj * best class probability, as in `runtime.boxes.postprocess_detections`."""
    half = pred[..., 2:4] / 2
    x1y1 = pred[..., 0:2] - half
    x2y2 = pred[..., 0:2] + half
    cls_scores = pred[..., 5:] * pred[..., 4:5]
    if cls_scores.shape[-1] == 1:
        score = cls_scores
        cls = torch.zeros_like(score)
    else:
        score_max, idx = cls_scores.max(-1, keepdim=True)
        score, cls = score_max, idx.to(pred.dtype)
    return torch.cat((x1y1, x2y2, score, cls), -1)


class DeployWrapper(nn.Module):
    """forward(images) -> tuple in `spec.output_names` order (ONNX export wants a tuple)."""

    def __init__(self, model: nn.Module, spec: DeploySpec):
        super().__init__()
        self.model = model.eval()
        self.spec = spec

    def raw(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The model's own eval outputs (decoded det, seg logits): the parity reference."""
        return self.model(images)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.finish(self.raw(images))

    def finish(self, out: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Raw model outputs -> graph outputs; split from `forward` so parity can keep the
        logits of the same pass (to excuse argmax ties) without running the model twice."""
        s = self.spec
        heads: tuple[torch.Tensor, ...] = ()
        if s.has_det and s.det_raw:
            heads = (out[TASK_DET],)  # decoded by the runtime
        elif s.has_det:
            det = decoded_to_xyxy(out[TASK_DET])
            if s.nms_in_graph:
                nc = out[TASK_DET].shape[-1] - 5
                heads = nms_fixed(det, nc, s.iou_thres, s.conf_thres, s.max_det)
            else:
                heads = (det,)
        segs = tuple(self._seg(out[t]) for t in s.seg_tasks)
        return heads + segs

    def _seg(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.spec.seg_argmax:
            return logits
        return logits.argmax(1).to(torch.uint8)
