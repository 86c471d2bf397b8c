"""Feature-matching losses between an adapted student map and the teacher's map (same shape).

mse: on features normalised per channel (each channel's spatial map to zero mean, unit
variance per image), so a few high-magnitude channels do not dominate *(ours, default)*;
cosine: 1 - cosine similarity of the channel vectors at each pixel; attention: attention transfer,
the L2 distance of normalised spatial energy maps (channel count does not matter)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

FeatureLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def channel_standardize(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    mean = x.mean(dim=(-2, -1), keepdim=True)
    var = x.var(dim=(-2, -1), keepdim=True, unbiased=False)
    return (x - mean) / (var + eps).sqrt()


def mse_loss(normalize: bool = True) -> FeatureLoss:
    def loss(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if normalize:
            s, t = channel_standardize(s), channel_standardize(t)
        return F.mse_loss(s, t)

    return loss


def cosine_loss(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return (1.0 - F.cosine_similarity(s, t, dim=1, eps=1e-6)).mean()


def attention_map(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x.pow(2).mean(1).flatten(1), dim=1)


def attention_loss(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return (attention_map(s) - attention_map(t)).pow(2).sum(1).mean()


def build_feature_loss(name: str, normalize: bool = True) -> FeatureLoss:
    if name == "mse":
        return mse_loss(normalize)
    if name == "cosine":
        return cosine_loss
    return attention_loss
