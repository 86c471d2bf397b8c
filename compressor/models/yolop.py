"""YOLOP (hustvl/YOLOP, MIT): CSPDarknet encoder, FPN+PAN neck, YOLOv5 detect head and two
segmentation heads. Layer indices and attribute names match the official `End-to-end.pth`, so at
width = depth = 1 its state dict loads strictly; width/depth multipliers give smaller members."""

from __future__ import annotations

import math

import torch
from torch import nn

from compressor.losses.yolop import YolopLoss, YolopLossConfig
from compressor.models.common import (
    SPP,
    BottleneckCSP,
    Concat,
    Conv,
    Detect,
    FeatureInfo,
    Focus,
    Upsample,
)
from compressor.models.registry import register_model
from compressor.models.spec import (
    KIND_DETECTION,
    KIND_SEGMENTATION,
    ModelSpec,
    PreprocessSpec,
    TaskSpec,
)
from runtime.errors import MtcError
from runtime.spec import (
    DEFAULT_INPUT_HW,
    DET_CLASSES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    TASK_DET,
    TASK_DRIVABLE,
    TASK_LANE,
)

# YOLOP anchors in pixels, per level (strides 8, 16, 32).
YOLOP_STRIDES: tuple[int, ...] = (8, 16, 32)
YOLOP_ANCHORS: tuple[tuple[tuple[float, float], ...], ...] = (
    ((3, 9), (5, 11), (4, 20)),
    ((7, 18), (6, 39), (12, 31)),
    ((19, 50), (38, 81), (68, 157)),
)

# Output layer of each task (official indices).
DET_IDX, DRIVABLE_IDX, LANE_IDX = 24, 33, 42

# (source layer(s), block, args). Channels are the width-1 values; `n` is the width-1 depth.
# Blocks: conv(c_out, k, s), csp(c_out, n, shortcut), focus(c_out), spp(c_out), up, cat.
_LAYOUT: list[tuple] = [
    (-1, "focus", 32),  # 0
    (-1, "conv", 64, 3, 2),  # 1
    (-1, "csp", 64, 1, True),  # 2
    (-1, "conv", 128, 3, 2),  # 3
    (-1, "csp", 128, 3, True),  # 4   backbone stride 8
    (-1, "conv", 256, 3, 2),  # 5
    (-1, "csp", 256, 3, True),  # 6   backbone stride 16
    (-1, "conv", 512, 3, 2),  # 7
    (-1, "spp", 512),  # 8
    (-1, "csp", 512, 1, False),  # 9   backbone stride 32
    (-1, "conv", 256, 1, 1),  # 10
    (-1, "up"),  # 11
    ((-1, 6), "cat"),  # 12
    (-1, "csp", 256, 1, False),  # 13
    (-1, "conv", 128, 1, 1),  # 14
    (-1, "up"),  # 15
    ((-1, 4), "cat"),  # 16  encoder output (feeds both seg heads)
    (-1, "csp", 128, 1, False),  # 17  neck P3
    (-1, "conv", 128, 3, 2),  # 18
    ((-1, 14), "cat"),  # 19
    (-1, "csp", 256, 1, False),  # 20  neck P4
    (-1, "conv", 256, 3, 2),  # 21
    ((-1, 10), "cat"),  # 22
    (-1, "csp", 512, 1, False),  # 23  neck P5
    ((17, 20, 23), "detect"),  # 24
]
_SEG_HEAD: list[tuple] = [
    (16, "conv", 128, 3, 1),
    (-1, "up"),
    (-1, "csp", 64, 1, False),
    (-1, "conv", 32, 3, 1),
    (-1, "up"),
    (-1, "conv", 16, 3, 1),
    (-1, "csp", 8, 1, False),
    (-1, "up"),
    (-1, "final", 2),
]
LAYOUT = _LAYOUT + _SEG_HEAD + _SEG_HEAD  # 25..33 drivable, 34..42 lane

_TAPS = (
    ("backbone_s8", 4, 8),
    ("backbone_s16", 6, 16),
    ("backbone_s32", 9, 32),
    ("encoder_s8", 16, 8),
    ("neck_s8", 17, 8),
    ("neck_s16", 20, 16),
    ("neck_s32", 23, 32),
)


class YolopConfigError(MtcError):
    """Width/depth/classes outside what the architecture can be built with."""


def _scale(c: int, width: float) -> int:
    """Scaled channel count, a multiple of 8 (min 8) except when width == 1 (exact YOLOP)."""
    if width == 1.0:
        return c
    return max(8, int(math.ceil(c * width / 8) * 8))


class YOLOP(nn.Module):
    def __init__(self, width: float = 1.0, depth: float = 1.0, num_classes: int = 1):
        super().__init__()
        if not (0 < width <= 4) or not (0 < depth <= 4):
            raise YolopConfigError(f"width and depth must be in (0, 4], got {width}, {depth}")
        if num_classes < 1:
            raise YolopConfigError(f"num_classes must be >= 1, got {num_classes}")
        self.config = {"width": width, "depth": depth, "num_classes": num_classes}
        self.froms: list = []
        layers: list[nn.Module] = []
        chans: list[int] = []
        for i, (src, kind, *args) in enumerate(LAYOUT):
            c_in = (
                (chans[-1] if chans else 3)
                if src == -1
                else chans[src]
                if isinstance(src, int)
                else None
            )
            layer, c_out = self._make(kind, args, c_in, src, chans, width, depth, num_classes)
            layers.append(layer)
            chans.append(c_out)
            self.froms.append(
                src if not isinstance(src, tuple) else [i - 1 if j == -1 else j for j in src]
            )
        self.model = nn.Sequential(*layers)
        self._init_weights()

    @staticmethod
    def _make(kind, args, c_in, src, chans, width, depth, nc):
        def n_of(n: int) -> int:
            return max(round(n * depth), 1) if n > 1 else 1

        if kind == "focus":
            c = _scale(args[0], width)
            return Focus(3, c, 3), c
        if kind == "conv":
            c = _scale(args[0], width)
            return Conv(c_in, c, args[1], args[2]), c
        if kind == "final":
            return Conv(c_in, args[0], 3, 1), args[0]
        if kind == "csp":
            c = _scale(args[0], width)
            return BottleneckCSP(c_in, c, n_of(args[1]), args[2]), c
        if kind == "spp":
            c = _scale(args[0], width)
            return SPP(c_in, c), c
        if kind == "up":
            return Upsample(), c_in
        if kind == "cat":
            idx = [len(chans) - 1 if j == -1 else j for j in src]
            return Concat(), sum(chans[j] for j in idx)
        if kind == "detect":
            return Detect(nc, YOLOP_ANCHORS, YOLOP_STRIDES, tuple(chans[j] for j in src)), 0
        raise YolopConfigError(f"unknown layer kind {kind!r}")

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eps, m.momentum = 1e-3, 0.03
        det = self.detect
        for conv, s in zip(det.m, det.strides):
            b = conv.bias.view(det.na, -1)
            with torch.no_grad():
                b[:, 4] += math.log(8 / (640 / s) ** 2)
                b[:, 5:] += math.log(0.6 / (det.nc - 0.99)) if det.nc > 1 else 0.0

    @property
    def detect(self) -> Detect:
        return self.model[DET_IDX]

    @property
    def det_anchors(self) -> torch.Tensor:
        return self.detect.anchor_grid.view(self.detect.nl, self.detect.na, 2)

    @property
    def det_strides(self) -> tuple[int, ...]:
        return self.detect.strides

    @property
    def feature_info(self) -> list[FeatureInfo]:
        """Distillation taps; channels read from the live modules so pruned models report
        their pruned widths."""
        return [FeatureInfo(n, f"model.{i}", self._out_channels(i), s) for n, i, s in _TAPS]

    def _out_channels(self, i: int) -> int:
        m = self.model[i]
        if isinstance(m, Concat):
            return sum(self._out_channels(j) for j in self.froms[i])
        if isinstance(m, Upsample):
            return self._out_channels(i - 1 if self.froms[i] == -1 else self.froms[i])
        if isinstance(m, Conv | Focus):
            return (m.conv if isinstance(m, Conv) else m.conv.conv).out_channels
        if isinstance(m, BottleneckCSP | SPP):
            return (m.cv4 if isinstance(m, BottleneckCSP) else m.cv2).conv.out_channels
        raise YolopConfigError(f"layer {i} ({type(m).__name__}) has no channel count")

    def forward(self, images: torch.Tensor) -> dict:
        cache: list = []
        x = images
        for f, m in zip(self.froms, self.model):
            if f != -1:
                x = cache[f] if isinstance(f, int) else [cache[j] for j in f]
            x = m(x)
            cache.append(x)
        return {
            TASK_DET: cache[DET_IDX],
            TASK_DRIVABLE: cache[DRIVABLE_IDX],
            TASK_LANE: cache[LANE_IDX],
        }


def _loss(model: nn.Module, config: YolopLossConfig = YolopLossConfig()) -> YolopLoss:
    return YolopLoss.for_model(model, config)


def _decoder_params(model: nn.Module) -> dict:
    det = model.detect  # type: ignore[union-attr]
    anchors = det.anchor_grid.view(det.nl, det.na, 2).tolist()
    return {"anchors": anchors, "strides": list(det.strides)}


def _import_official(state_dict) -> tuple[dict, dict] | None:
    """hustvl/YOLOP's End-to-end.pth: a YOLOv5 anchor buffer at layer 24."""
    sd = {k.removeprefix("module."): v for k, v in state_dict.items()}
    if "model.24.anchors" not in sd:
        return None
    return {"width": 1.0, "depth": 1.0, "num_classes": 1}, sd


_SEG_CLASSES = ("background", "foreground")

SPEC = ModelSpec(
    name="yolop",
    tasks=(
        TaskSpec(TASK_DET, KIND_DETECTION, DET_CLASSES, decoder="yolop_anchor"),
        TaskSpec(TASK_DRIVABLE, KIND_SEGMENTATION, _SEG_CLASSES),
        TaskSpec(TASK_LANE, KIND_SEGMENTATION, _SEG_CLASSES),
    ),
    loss=_loss,
    loss_config=YolopLossConfig,
    stride=32,
    # RGB, letterboxed to 640x384 with gray 114, ImageNet mean/std (hustvl/YOLOP's demo)
    preprocess=PreprocessSpec(
        input_hw=DEFAULT_INPUT_HW, mean=IMAGENET_MEAN, std=IMAGENET_STD, letterbox=True
    ),
    # Backbone stages and the encoder output: in the synthetic ablation, also distilling the
    # neck outputs that feed the detect head cost 10-16 mAP50 points after the same fine-tune,
    # while backbone + encoder taps kept detection within noise of the teacher.
    taps=("backbone_s8", "backbone_s16", "backbone_s32", "encoder_s8"),
    # Final prediction convs (their output channels are the anchor layout / the class maps).
    protected=("model.24.m.0", "model.24.m.1", "model.24.m.2", "model.33", "model.42"),
    # The backbone CSPs' inner bottlenecks (x + cv2(cv1(x))): removing one leaves the identity.
    # The neck's and the seg heads' CSPs are built without the shortcut, so theirs are not.
    removable_blocks=("model.2.m.*", "model.4.m.*", "model.6.m.*"),
    importer=_import_official,
    decoder_params=_decoder_params,
    decoded_in_graph=True,
    official_source="hustvl/YOLOP official checkpoint",
)


@register_model("yolop", spec=SPEC)
def yolop(width: float = 1.0, depth: float = 1.0, num_classes: int = 1) -> YOLOP:
    """YOLOP; width = depth = 1 is the official architecture (7.94M parameters)."""
    return YOLOP(width=width, depth=depth, num_classes=num_classes)
