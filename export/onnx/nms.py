"""NMS inside the exported graph: the standard ONNX `NonMaxSuppression` node (ORT and TensorRT
>= 8.5 both run it), then fixed-size per-image outputs so the engine has no data-dependent
output shape. Eager PyTorch runs the same algorithm through `runtime.boxes.nms`, so parity
compares like with like."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from runtime.boxes import nms as numpy_nms


class _NonMaxSuppression(torch.autograd.Function):
    """Eager: greedy NMS per (image, class) in numpy. Export: one ONNX NonMaxSuppression node.
    Returns selected (batch, class, box) int64 rows, as the ONNX operator does."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        boxes: torch.Tensor,
        scores: torch.Tensor,
        max_out: int,
        iou: float,
        score_thr: float,
    ) -> torch.Tensor:
        b_np = boxes.detach().cpu().numpy()
        s_np = scores.detach().cpu().numpy()
        rows: list[tuple[int, int, int]] = []
        for b in range(s_np.shape[0]):
            for c in range(s_np.shape[1]):
                cand = np.flatnonzero(s_np[b, c] > score_thr)
                keep = numpy_nms(b_np[b, cand], s_np[b, c, cand], iou, max_out)
                rows.extend((b, c, int(cand[k])) for k in keep)
        out = torch.tensor(rows, dtype=torch.int64).reshape(-1, 3)
        return out.to(boxes.device)

    @staticmethod
    def symbolic(  # type: ignore[override]
        g: Any, boxes: Any, scores: Any, max_out: int, iou: float, score_thr: float
    ) -> Any:
        return g.op(
            "NonMaxSuppression",
            boxes,
            scores,
            g.op("Constant", value_t=torch.tensor([max_out], dtype=torch.int64)),
            g.op("Constant", value_t=torch.tensor([iou], dtype=torch.float32)),
            g.op("Constant", value_t=torch.tensor([score_thr], dtype=torch.float32)),
            center_point_box_i=0,
        )


def nms_fixed(
    det: torch.Tensor, num_classes: int, iou: float, conf: float, max_det: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """det [B, N, 6] (x1 y1 x2 y2 score class) -> ([B, K, 6] best-first, zero rows after the
    count; [B] int32 count), K = min(max_det, N). Built from Scatter/TopK/Gather only, all of
    which TensorRT parses with static shapes."""
    bsz, n, _ = det.shape
    k = min(max_det, n)
    score, cls = det[..., 4], det[..., 5]
    if num_classes == 1:
        per_class = score.unsqueeze(1)
    else:  # class-aware: a box only competes inside its own best class
        classes = torch.arange(num_classes, dtype=det.dtype, device=det.device)
        per_class = (score.unsqueeze(-1) * (cls.unsqueeze(-1) == classes)).transpose(1, 2)
    selected = _NonMaxSuppression.apply(
        det[..., :4].contiguous(), per_class.contiguous(), k, iou, conf
    )
    flat = selected[:, 0] * n + selected[:, 2]
    keep = torch.zeros(bsz * n, dtype=det.dtype, device=det.device)
    keep = keep.scatter(0, flat, torch.ones_like(flat, dtype=det.dtype)).view(bsz, n)
    top_score, top_idx = torch.topk(score * keep, k, dim=1)
    rows = torch.gather(det, 1, top_idx.unsqueeze(-1).expand(bsz, k, 6))
    valid = (top_score > 0).to(det.dtype)
    count = valid.sum(1).to(torch.int32)
    return rows * valid.unsqueeze(-1), count
