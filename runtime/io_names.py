"""Tensor names of exported artifacts, defined once.

The export writes these names into the ONNX graph (and so into engines built from it); the runtime
reads them back through the sidecar. Task outputs reuse the task names of `runtime.spec`, so the
same string is a model output key, an ONNX output name and a runtime result key.
"""

from __future__ import annotations

from runtime.spec import SEG_TASKS, TASK_DET, TASK_DRIVABLE, TASK_LANE

# Network input: float32 [B, 3, H, W], letterboxed, RGB, scaled and normalised (see the sidecar).
INPUT_NAME = "images"

# Detection output. Without NMS in the graph: float32 [B, N, 6]; with NMS in the graph: float32
# [B, max_det, 6], rows at and beyond `det_count[b]` are zero.
DET_OUTPUT = TASK_DET
# int32 [B]: valid rows of `det` per image when NMS runs in the graph.
DET_COUNT = "det_count"

# Segmentation outputs: uint8 [B, H, W] argmax masks, or float32 [B, C, H, W] logits.
DRIVABLE_OUTPUT = TASK_DRIVABLE
LANE_OUTPUT = TASK_LANE
SEG_OUTPUTS: tuple[str, ...] = SEG_TASKS

# Layouts of the last axis of `det` (the sidecar's `det.layout`).
# x1, y1, x2, y2 in input pixels, score = obj * cls probability, class index (as float).
DET_LAYOUT_XYXY = "xyxy_score_class"
# The model's own decoded eval output: cx, cy, w, h in input pixels, objectness, per-class probs.
DET_LAYOUT_CXCYWH = "cxcywh_obj_cls"

# Values of the sidecar's `seg.output`.
SEG_ARGMAX = "argmax_uint8"
SEG_LOGITS = "logits"
