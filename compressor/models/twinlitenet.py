"""TwinLiteNet (chequanghuy/TwinLiteNet, MIT): an ESPNet-C encoder with position and channel
attention at 1/8 resolution, and two transposed-conv decoders back to full resolution, one for
drivable area and one for lane lines (2 classes each, no detection). 0.44M parameters.

Parameter names follow the official `pretrained/best.pth`, so its state dict (with or without
DataParallel's `module.` prefix) loads strictly. Where the official forward returns the tuple
(drivable, lane), this module returns the task dict every stage of the pipeline reads."""

from __future__ import annotations

import re

import torch
from torch import nn

from compressor.losses.segmentation import SegmentationLoss, TwinLiteLossConfig
from compressor.models.common import FeatureInfo
from compressor.models.registry import register_model
from compressor.models.spec import KIND_SEGMENTATION, ModelSpec, PreprocessSpec, TaskSpec
from runtime.errors import MtcError
from runtime.spec import TASK_DRIVABLE, TASK_LANE

BN_EPS = 1e-3  # the official BatchNorms all use eps 1e-3
# Dilation rates of an ESP block's parallel branches (d1 is the un-dilated branch).
DILATIONS: tuple[int, ...] = (1, 2, 4, 8, 16)
# Three stride-2 stages (level1, level2_0, level3_0) and three x2 transposed convs back: an
# input side that is not a multiple of 8 comes back larger (the stride-2 convs round up).
STRIDE = 8


class TwinLiteConfigError(MtcError):
    """Encoder depths the architecture cannot be built with."""


class CBR(nn.Module):
    """Conv (same padding, no bias) + BN + PReLU."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, stride, (k - 1) // 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=BN_EPS)
        self.act = nn.PReLU(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class BR(nn.Module):
    """BN + PReLU after an ESP block's merge."""

    def __init__(self, c: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(c, eps=BN_EPS)
        self.act = nn.PReLU(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(x))


class PlainConv(nn.Module):
    """A bias-free conv wrapped so its weight is `<name>.conv.weight` as in the official file."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        pad = (k - 1) // 2 * dilation
        self.conv = nn.Conv2d(c_in, c_out, k, stride, pad, dilation=dilation, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class UpX2(nn.Module):
    """2x2 stride-2 transposed conv + BN + PReLU: doubles H and W exactly."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.deconv = nn.ConvTranspose2d(c_in, c_out, 2, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=BN_EPS)
        self.act = nn.PReLU(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.deconv(x)))


class _ESPBranches(nn.Module):
    """Reduce -> split into dilated branches -> hierarchical sums -> concat (ESPNet's
    de-gridding merge). Branch d1 takes the remainder so the widths add up to `c_out`."""

    def __init__(self, c_in: int, c_out: int, reduce_k: int, stride: int):
        super().__init__()
        n = max(c_out // 5, 1)
        n1 = max(c_out - 4 * n, 1)
        self.c1 = PlainConv(c_in, n, reduce_k, stride)
        self.d1 = PlainConv(n, n1, 3, 1, DILATIONS[0])
        self.d2 = PlainConv(n, n, 3, 1, DILATIONS[1])
        self.d4 = PlainConv(n, n, 3, 1, DILATIONS[2])
        self.d8 = PlainConv(n, n, 3, 1, DILATIONS[3])
        self.d16 = PlainConv(n, n, 3, 1, DILATIONS[4])

    def merge(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c1(x)
        s2 = self.d2(y)
        s4 = s2 + self.d4(y)
        s8 = s4 + self.d8(y)
        s16 = s8 + self.d16(y)
        return torch.cat([self.d1(y), s2, s4, s8, s16], 1)


class DownSamplerB(_ESPBranches):
    """Stride-2 ESP block (3x3 strided reduce), BN + PReLU after the merge."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__(c_in, c_out, reduce_k=3, stride=2)
        self.bn = nn.BatchNorm2d(c_out, eps=BN_EPS)
        self.act = nn.PReLU(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.merge(x)))


class DilatedParllelResidualBlockB(_ESPBranches):
    """ESP block (1x1 reduce) with an identity residual; official class name, typo included."""

    def __init__(self, c_in: int, c_out: int, add: bool = True):
        super().__init__(c_in, c_out, reduce_k=1, stride=1)
        self.bn = BR(c_out)
        self.add = add

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.merge(x)
        return self.bn(x + y if self.add else y)


class ImagePyramid(nn.Module):
    """The input image average-pooled `times` times by 2 (no parameters), concatenated with
    the features of the same resolution."""

    def __init__(self, times: int):
        super().__init__()
        self.pool = nn.ModuleList(nn.AvgPool2d(3, stride=2, padding=1) for _ in range(times))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for p in self.pool:
            x = p(x)
        return x


class PositionAttention(nn.Module):
    """Spatial self-attention (DANet's PAM): every position attends to every other one,
    added back through a learnt scale `gamma` that starts at 0."""

    def __init__(self, c: int):
        super().__init__()
        self.query_conv = nn.Conv2d(c, c // 8, 1)
        self.key_conv = nn.Conv2d(c, c // 8, 1)
        self.value_conv = nn.Conv2d(c, c, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        q = self.query_conv(x).flatten(2).transpose(1, 2)  # [B, HW, C/8]
        k = self.key_conv(x).flatten(2)  # [B, C/8, HW]
        attn = torch.softmax(torch.bmm(q, k), dim=-1)  # [B, HW, HW]
        v = self.value_conv(x).flatten(2)  # [B, C, HW]
        out = torch.bmm(v, attn.transpose(1, 2)).view(b, -1, h, w)
        return self.gamma * out + x


class ChannelAttention(nn.Module):
    """Channel self-attention (DANet's CAM) on the raw features, with DANet's
    'max minus energy' trick, added back through `gamma` (starts at 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        flat = x.flatten(2)  # [B, C, HW]
        energy = torch.bmm(flat, flat.transpose(1, 2))  # [B, C, C]
        energy = energy.max(-1, keepdim=True)[0].expand_as(energy) - energy
        out = torch.bmm(torch.softmax(energy, dim=-1), flat).view(b, -1, h, w)
        return self.gamma * out + x


class ESPNetEncoder(nn.Module):
    """ESPNet-C with image-pyramid shortcuts; `p`/`q` ESP blocks at 1/4 and 1/8 resolution,
    then a 32-channel bottleneck with parallel position/channel attention. Output: 32
    channels at 1/8 of the input."""

    def __init__(self, p: int = 2, q: int = 3):
        super().__init__()
        self.level1 = CBR(3, 16, 3, 2)
        self.sample1 = ImagePyramid(1)
        self.sample2 = ImagePyramid(2)
        self.b1 = CBR(16 + 3, 19, 3)
        self.level2_0 = DownSamplerB(16 + 3, 64)
        self.level2 = nn.ModuleList(DilatedParllelResidualBlockB(64, 64) for _ in range(p))
        self.b2 = CBR(128 + 3, 131, 3)
        self.level3_0 = DownSamplerB(128 + 3, 128)
        self.level3 = nn.ModuleList(DilatedParllelResidualBlockB(128, 128) for _ in range(q))
        self.b3 = CBR(256, 32, 3)
        self.sa = PositionAttention(32)
        self.sc = ChannelAttention()
        self.conv_sa = CBR(32, 32, 3)
        self.conv_sc = CBR(32, 32, 3)
        self.classifier = CBR(32, 32, 1, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x1 = self.b1(torch.cat([self.level1(images), self.sample1(images)], 1))
        y2_0 = self.level2_0(x1)
        y2 = y2_0
        for block in self.level2:
            y2 = block(y2)
        x2 = self.b2(torch.cat([y2, y2_0, self.sample2(images)], 1))
        y3_0 = self.level3_0(x2)
        y3 = y3_0
        for block in self.level3:
            y3 = block(y3)
        x3 = self.b3(torch.cat([y3_0, y3], 1))
        return self.classifier(self.conv_sa(self.sa(x3)) + self.conv_sc(self.sc(x3)))


# Distillation taps: (name, module path of a CBR, stride vs the input).
_TAPS: tuple[tuple[str, str, int], ...] = (
    ("enc_s2", "encoder.b1", 2),
    ("enc_s4", "encoder.b2", 4),
    ("enc_s8", "encoder.b3", 8),
    ("encoder", "encoder.classifier", 8),
)


class TwinLiteNet(nn.Module):
    """Encoder + two decoders (x8 by three UpX2 each): drivable (`*_1`) and lane (`*_2`),
    the order of the official forward's (drivable, lane) tuple."""

    def __init__(self, p: int = 2, q: int = 3):
        super().__init__()
        if p < 1 or q < 1:
            raise TwinLiteConfigError(
                f"encoder depths p (ESP blocks at 1/4) and q (at 1/8) must be >= 1, got "
                f"p={p}, q={q}; the official model is p=2, q=3"
            )
        self.config = {"p": p, "q": q}
        self.encoder = ESPNetEncoder(p, q)
        self.up_1_1 = UpX2(32, 16)
        self.up_2_1 = UpX2(16, 8)
        self.up_1_2 = UpX2(32, 16)
        self.up_2_2 = UpX2(16, 8)
        self.classifier_1 = UpX2(8, 2)
        self.classifier_2 = UpX2(8, 2)

    @property
    def feature_info(self) -> list[FeatureInfo]:
        """Encoder taps; channels read from the live modules (a pruned model reports its
        pruned widths)."""
        mods = dict(self.named_modules())
        return [FeatureInfo(n, path, mods[path].conv.out_channels, s) for n, path, s in _TAPS]

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.encoder(images)
        drivable = self.classifier_1(self.up_2_1(self.up_1_1(x)))
        lane = self.classifier_2(self.up_2_2(self.up_1_2(x)))
        return {TASK_DRIVABLE: drivable, TASK_LANE: lane}


def _loss(model: nn.Module, config: TwinLiteLossConfig = TwinLiteLossConfig()) -> SegmentationLoss:
    """Focal + Tversky as the official training, each task's loss weighted by `config`."""
    return SegmentationLoss(config.tasks())


_BLOCK_KEY = re.compile(r"^encoder\.level([23])\.(\d+)\.c1\.conv\.weight$")


def _import_official(state_dict) -> tuple[dict, dict] | None:
    """chequanghuy/TwinLiteNet's best.pth (saved from DataParallel, so usually `module.`-
    prefixed): the ESPNet stem plus the position-attention query conv, which no other
    registered model has. The encoder depths are read from the ESP block indices."""
    sd = {k.removeprefix("module."): v for k, v in state_dict.items()}
    if "encoder.level1.conv.weight" not in sd or "encoder.sa.query_conv.weight" not in sd:
        return None
    depth = {"2": 0, "3": 0}
    for key in sd:
        m = _BLOCK_KEY.match(key)
        if m:
            depth[m.group(1)] = max(depth[m.group(1)], int(m.group(2)) + 1)
    if not depth["2"] or not depth["3"]:
        return None
    return {"p": depth["2"], "q": depth["3"]}, sd


_SEG_CLASSES = ("background", "foreground")

SPEC = ModelSpec(
    name="twinlitenet",
    tasks=(
        TaskSpec(TASK_DRIVABLE, KIND_SEGMENTATION, _SEG_CLASSES),
        TaskSpec(TASK_LANE, KIND_SEGMENTATION, _SEG_CLASSES),
    ),
    loss=_loss,
    loss_config=TwinLiteLossConfig,
    stride=STRIDE,
    # The official test_image.py / test_video.py: cv2.resize to 640x360 (a plain resize, no
    # letterbox), BGR -> RGB, /255, no mean/std. BDD100K frames are 16:9, so the resize keeps
    # their aspect ratio anyway.
    preprocess=PreprocessSpec(
        input_hw=(360, 640), mean=None, std=None, color="RGB", letterbox=False
    ),
    # Encoder stages at 1/4 and 1/8 and the encoder output (the 1/2 tap is available by name
    # but costs the most memory for the least semantic content).
    taps=("enc_s4", "enc_s8", "encoder"),
    # Final prediction layers: their output channels are the class maps.
    protected=("classifier_1", "classifier_2"),
    # No removable blocks (yet): the ESP blocks' residual sum is followed by their own BN +
    # PReLU (bn(x + f(x))), so removing f leaves bn(x), not the identity. The attention blocks
    # (encoder.sa, encoder.sc: x + gamma * f(x)) would be, but their time is in matrix products
    # the latency table does not probe, so the planner could not price them.
    importer=_import_official,
    official_source="chequanghuy/TwinLiteNet official checkpoint (pretrained/best.pth)",
)


@register_model("twinlitenet", spec=SPEC)
def twinlitenet(p: int = 2, q: int = 3) -> TwinLiteNet:
    """TwinLiteNet; p = 2, q = 3 is the official architecture (439,633 parameters)."""
    return TwinLiteNet(p=p, q=q)
