"""A small non-YOLOP multi-task model: proves the export takes any model that meets the
contract (dict of det / drivable / lane), and keeps pipeline tests that do not need YOLOP's
exact graph fast. `unsupported_op=True` adds an ONNX `Det` node, which TensorRT cannot parse."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from compressor.models.spec import (
    KIND_DETECTION,
    KIND_SEGMENTATION,
    ModelSpec,
    PreprocessSpec,
    TaskSpec,
)
from runtime.spec import IMAGENET_MEAN, IMAGENET_STD

_SEG = ("background", "foreground")
# Its spec, carried on the model (`model.model_spec`): how an unregistered model tells the
# pipeline what it is. Decoded in the graph (rows cx, cy, w, h, obj, cls).
SPEC = ModelSpec(
    name="tiny-multitask",
    tasks=(
        TaskSpec("det", KIND_DETECTION, ("vehicle",), decoder="yolop_anchor"),
        TaskSpec("drivable", KIND_SEGMENTATION, _SEG),
        TaskSpec("lane", KIND_SEGMENTATION, _SEG),
    ),
    loss=lambda model, cfg=None: None,
    # ImageNet-normalised, letterboxed to 384x640 (what the export tests' checkpoints declare)
    preprocess=PreprocessSpec(
        input_hw=(384, 640), mean=IMAGENET_MEAN, std=IMAGENET_STD, letterbox=True
    ),
    stride=8,
    protected=("det_head", "seg_head"),
)


class TinyMultiTask(nn.Module):
    def __init__(self, unsupported_op: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Sequential(
            nn.Conv2d(3, 8, 3, 2, 1),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, 2, 1),
            nn.ReLU(),
            nn.Conv2d(16, 16, 3, 2, 1),
            nn.ReLU(),
        )
        self.det_head = nn.Conv2d(16, 6, 1)
        self.seg_head = nn.Conv2d(16, 4, 1)
        self.unsupported_op = unsupported_op
        self.model_name = "tiny-multitask"
        self.config = {"unsupported_op": unsupported_op}
        self.model_spec = SPEC

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.stem(x)
        b, _, h, w = f.shape
        p = self.det_head(f).sigmoid().permute(0, 2, 3, 1).reshape(b, h * w, 6)
        gy, gx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        grid = torch.stack((gx, gy), -1).reshape(1, h * w, 2).to(p.dtype)
        det = torch.cat(((p[..., :2] + grid) * 8, p[..., 2:4] * 64, p[..., 4:]), -1)
        if self.unsupported_op:
            det = det + 1e-6 * torch.linalg.det(f[:, :2, :2, :2].mean(1)).view(b, 1, 1)
        seg = F.interpolate(self.seg_head(f), scale_factor=8.0, mode="nearest")
        return {"det": det, "drivable": seg[:, :2], "lane": seg[:, 2:]}
