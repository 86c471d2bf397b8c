"""YOLOP building blocks (CSPDarknet family). Attribute names follow hustvl/YOLOP so its
state dict loads strictly."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class FeatureInfo:
    """A named feature tap for distillation: module path, channels, stride vs the input."""

    name: str
    module: str
    channels: int
    stride: int


def autopad(k: int) -> int:
    return k // 2


class Conv(nn.Module):
    """Conv2d + BN + Hardswish, YOLOP's basic unit."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k), bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = nn.Hardswish() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, c1: int, c2: int, shortcut: bool = True):
        super().__init__()
        self.cv1 = Conv(c1, c2, 1, 1)
        self.cv2 = Conv(c2, c2, 3, 1)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class BottleneckCSP(nn.Module):
    """CSP bottleneck (YOLOv5 v1-v3 form, as in YOLOP)."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, c_: int | None = None):
        super().__init__()
        c_ = c_ if c_ is not None else c2 // 2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = nn.Conv2d(c1, c_, 1, 1, bias=False)
        self.cv3 = nn.Conv2d(c_, c_, 1, 1, bias=False)
        self.cv4 = Conv(2 * c_, c2, 1, 1)
        self.bn = nn.BatchNorm2d(2 * c_)
        self.act = nn.LeakyReLU(0.1, inplace=True)
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y1 = self.cv3(self.m(self.cv1(x)))
        y2 = self.cv2(x)
        return self.cv4(self.act(self.bn(torch.cat((y1, y2), dim=1))))


class SPP(nn.Module):
    def __init__(self, c1: int, c2: int, k: tuple[int, ...] = (5, 9, 13)):
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * (len(k) + 1), c2, 1, 1)
        self.m = nn.ModuleList(nn.MaxPool2d(kernel_size=x, stride=1, padding=x // 2) for x in k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        return self.cv2(torch.cat([x] + [m(x) for m in self.m], 1))


class Focus(nn.Module):
    """Space-to-depth (pixel unshuffle by 2) then Conv."""

    def __init__(self, c1: int, c2: int, k: int = 3):
        super().__init__()
        self.conv = Conv(c1 * 4, c2, k, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(
            torch.cat(
                [x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1
            )
        )


class Concat(nn.Module):
    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(xs, 1)


class Upsample(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.interpolate(x, scale_factor=2.0, mode="nearest")


class Detect(nn.Module):
    """YOLOv5 anchor head. Raw per-level logits in training (or when `raw` is set); decoded
    (cx, cy, w, h in input pixels, obj, cls probabilities) in eval."""

    def __init__(
        self,
        nc: int,
        anchors_px: tuple[tuple[tuple[float, float], ...], ...],
        strides: tuple[int, ...],
        ch: tuple[int, ...],
    ):
        super().__init__()
        self.nc = nc
        self.no = nc + 5
        self.nl = len(anchors_px)
        self.na = len(anchors_px[0])
        self.strides = tuple(int(s) for s in strides)
        a = torch.tensor(anchors_px, dtype=torch.float32)  # (nl, na, 2) pixels
        s = torch.tensor(self.strides, dtype=torch.float32).view(-1, 1, 1)
        # Names and shapes as in YOLOP: anchors in grid units, anchor_grid in pixels.
        self.register_buffer("anchors", a / s)
        self.register_buffer("anchor_grid", a.clone().view(self.nl, 1, self.na, 1, 1, 2))
        self.m = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in ch)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor] | torch.Tensor:
        raw = []
        for i, x in enumerate(xs):
            y = self.m[i](x)
            bs, _, ny, nx = y.shape
            raw.append(y.view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous())
        if self.training:
            return raw
        return self.decode(raw)

    def decode(self, raw: list[torch.Tensor]) -> torch.Tensor:
        out = []
        for i, y in enumerate(raw):
            bs, na, ny, nx, no = y.shape
            gy, gx = torch.meshgrid(
                torch.arange(ny, device=y.device, dtype=y.dtype),
                torch.arange(nx, device=y.device, dtype=y.dtype),
                indexing="ij",
            )
            grid = torch.stack((gx, gy), -1).view(1, 1, ny, nx, 2)
            p = y.sigmoid()
            xy = (p[..., :2] * 2.0 - 0.5 + grid) * self.strides[i]
            wh = (p[..., 2:4] * 2.0) ** 2 * self.anchor_grid[i].to(y.dtype)
            out.append(torch.cat((xy, wh, p[..., 4:]), -1).view(bs, -1, no))
        return torch.cat(out, 1)


def freeze_bn(model: nn.Module) -> nn.Module:
    """Put every BatchNorm in eval mode (running stats frozen) while the rest stays as is —
    the calibration mode of pruning: BN in eval, detection head still raw."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    return model
