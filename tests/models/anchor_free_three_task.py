"""A test-only three-task model with the anchor-free DFL head: a residual plain-conv backbone
(strides 8/16/32), an FPN-lite neck (lateral 1x1 convs, top-down adds, 3x3 smoothing), the
reusable `AnchorFreeHead` for `det`, and two segmentation heads unlike YOLOP's (bilinear and
transposed-conv upsampling). It proves the spec, loss, pruning and decoder path work for a model
that is not YOLOP.

Not registered in the model registry (registration is process-wide and would leak into other
tests): `build()` sets `model.model_spec`, `model.model_name` and `model.config`, which is how the
pipeline finds the spec of an unregistered model (`spec_of`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from compressor.losses.anchor_free import AnchorFreeLoss
from compressor.losses.yolop import tversky_loss
from compressor.models.common import FeatureInfo
from compressor.models.heads import AnchorFreeHead
from compressor.models.spec import (
    KIND_DETECTION,
    KIND_SEGMENTATION,
    ModelSpec,
    PreprocessSpec,
    TaskSpec,
)
from runtime.spec import (
    DET_CLASSES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    TASK_DET,
    TASK_DRIVABLE,
    TASK_LANE,
)

NAME = "anchor_free_three_task"
STRIDES = (8, 16, 32)
INPUT_HW = (64, 128)


def cbr(ci: int, co: int, k: int = 3, s: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(ci, co, k, s, k // 2, bias=False), nn.BatchNorm2d(co), nn.ReLU())


class ResBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            cbr(c, c), nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


class AnchorFreeThreeTask(nn.Module):
    def __init__(self, width: int = 16, reg_max: int = 16) -> None:
        super().__init__()
        c = [width, 2 * width, 3 * width, 4 * width, 6 * width]  # strides 2, 4, 8, 16, 32
        self.stem = cbr(3, c[0], 3, 2)
        self.stage1 = nn.Sequential(cbr(c[0], c[1], 3, 2), ResBlock(c[1]))
        self.stage2 = nn.Sequential(cbr(c[1], c[2], 3, 2), ResBlock(c[2]))  # s8
        self.stage3 = nn.Sequential(cbr(c[2], c[3], 3, 2), ResBlock(c[3]))  # s16
        self.stage4 = nn.Sequential(cbr(c[3], c[4], 3, 2), ResBlock(c[4]))  # s32
        n = 2 * width
        self.lateral = nn.ModuleList(nn.Conv2d(ci, n, 1) for ci in (c[2], c[3], c[4]))
        self.smooth = nn.ModuleList(cbr(n, n) for _ in STRIDES)
        self.det_head = AnchorFreeHead([n] * 3, STRIDES, len(DET_CLASSES), reg_max, (n, n))
        self.drivable_head = nn.Sequential(cbr(n, width), nn.Conv2d(width, 2, 1))
        self.lane_head = nn.Sequential(
            nn.ConvTranspose2d(n, width, 2, 2),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, 2, 1),
        )

    @property
    def feature_info(self) -> list[FeatureInfo]:
        """Distillation taps; channels read from the live (maybe pruned) modules."""
        return [
            FeatureInfo(f"backbone_s{s}", f"stage{i}", stage[1].body[1].out_channels, s)
            for i, s, stage in ((2, 8, self.stage2), (3, 16, self.stage3), (4, 32, self.stage4))
        ]

    def forward(self, images: torch.Tensor) -> dict:
        c3 = self.stage2(self.stage1(self.stem(images)))
        c4 = self.stage3(c3)
        c5 = self.stage4(c4)
        p5 = self.lateral[2](c5)
        p4 = self.lateral[1](c4) + F.interpolate(p5, scale_factor=2.0, mode="nearest")
        p3 = self.lateral[0](c3) + F.interpolate(p4, scale_factor=2.0, mode="nearest")
        feats = [sm(p) for sm, p in zip(self.smooth, (p3, p4, p5))]
        hw = images.shape[-2:]
        drivable = F.interpolate(self.drivable_head(feats[0]), size=hw, mode="bilinear")
        lane = F.interpolate(self.lane_head(feats[0]), size=hw, mode="bilinear")
        return {TASK_DET: self.det_head(feats), TASK_DRIVABLE: drivable, TASK_LANE: lane}


class ThreeTaskLoss:
    """{det, drivable, lane}: the anchor-free det loss, BCE for drivable, BCE + Tversky
    (Dice at 0.5/0.5) for the thin lanes, as YOLOP's loss does."""

    def __init__(self, model: AnchorFreeThreeTask, config: object = None) -> None:
        head = model.det_head  # `config`: NoLossOptions (this loss has none)
        self.det = AnchorFreeLoss(head.strides, head.nc, head.reg_max)

    def __call__(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        drv = F.one_hot(batch[TASK_DRIVABLE].long(), 2).permute(0, 3, 1, 2).float()
        lane = F.one_hot(batch[TASK_LANE].long(), 2).permute(0, 3, 1, 2).float()
        lane_logits = outputs[TASK_LANE]
        lane_prob = lane_logits.softmax(1)[:, 1]
        return {
            TASK_DET: self.det(outputs[TASK_DET], batch["targets"]),
            TASK_DRIVABLE: 0.2 * F.binary_cross_entropy_with_logits(outputs[TASK_DRIVABLE], drv),
            TASK_LANE: 0.2 * F.binary_cross_entropy_with_logits(lane_logits, lane)
            + 0.2 * tversky_loss(lane_prob, lane[:, 1], 0.5, 0.5),
        }


def _decoder_params(model: nn.Module) -> dict:
    head = model.det_head  # type: ignore[union-attr]
    return {"strides": list(head.strides), "reg_max": head.reg_max}


_SEG = ("background", "foreground")
# Prediction convs: the det head's box/class convs (their channels are the bin/class layout)
# and the two segmentation class convs.
PROTECTED = tuple(f"det_head.{b}.{i}.2" for b in ("box", "cls") for i in range(3)) + (
    "drivable_head.1",
    "lane_head.3",
)

SPEC = ModelSpec(
    name=NAME,
    tasks=(
        TaskSpec(TASK_DET, KIND_DETECTION, DET_CLASSES, decoder="anchor_free_dfl"),
        TaskSpec(TASK_DRIVABLE, KIND_SEGMENTATION, _SEG),
        TaskSpec(TASK_LANE, KIND_SEGMENTATION, _SEG),
    ),
    loss=ThreeTaskLoss,
    stride=32,
    preprocess=PreprocessSpec(
        input_hw=INPUT_HW, mean=IMAGENET_MEAN, std=IMAGENET_STD, letterbox=True
    ),
    taps=("backbone_s8", "backbone_s16", "backbone_s32"),
    protected=PROTECTED,
    decoder_params=_decoder_params,
    decoded_in_graph=False,
)


def build(width: int = 16, reg_max: int = 16, seed: int = 0) -> AnchorFreeThreeTask:
    """The model with its spec attached (no registry entry)."""
    torch.manual_seed(seed)
    model = AnchorFreeThreeTask(width=width, reg_max=reg_max)
    model.model_spec = SPEC  # type: ignore[assignment]
    model.model_name = NAME  # type: ignore[assignment]
    model.config = {"width": width, "reg_max": reg_max}  # type: ignore[assignment]
    return model
