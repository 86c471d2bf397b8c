"""Parameter / FLOPs counting: hand-computed MACs for each layer kind, FLOPs = 2 x MACs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from compressor import build_model
from compressor.flops import FlopsInputError, count_cost, count_params


class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, 1, 1, bias=False)  # 16x16 out
        self.dw = nn.Conv2d(8, 8, 3, 2, 1, groups=8)  # 8x8 out, depthwise
        self.up = nn.ConvTranspose2d(8, 4, 2, 2)  # 8x8 in -> 16x16 out
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        y = self.up(self.dw(self.conv(x)))
        return {"a": self.fc(y.mean((2, 3))), "b": y}


def test_macs_per_layer_kind_match_hand_counts():
    cost = count_cost(Mixed(), input_hw=(16, 16))
    layers = {k: v.macs for k, v in cost.layers.items()}
    assert layers["conv"] == 16 * 16 * 8 * 3 * 9
    assert layers["dw"] == 8 * 8 * 8 * 1 * 9
    assert layers["up"] == 8 * 8 * 8 * 4 * 4  # input pixels x in x out x kernel
    assert layers["fc"] == 4 * 5
    assert cost.macs == sum(layers.values())
    assert cost.flops == 2 * cost.macs
    assert cost.input_hw == (16, 16)


def test_params_count_shared_weights_once():
    m = Mixed()
    m.fc2 = m.fc  # same module twice
    assert count_params(m) == sum(p.numel() for p in Mixed().parameters())


def test_macs_scale_with_input_area_and_mode_is_restored():
    m = build_model("yolop", width=0.25, depth=0.33).train()
    small = count_cost(m, input_hw=(64, 128))
    big = count_cost(m, input_hw=(128, 256))
    assert m.training  # restored after the eval-mode probe
    assert big.macs == pytest.approx(4 * small.macs, rel=1e-6)
    assert small.params == big.params == count_params(m)


def test_default_input_is_640x384():
    cost = count_cost(Mixed())
    assert cost.input_hw == (384, 640)
    assert cost.to_dict()["gflops"] == pytest.approx(cost.flops / 1e9, abs=1e-4)


def test_bad_probe_size_is_a_clear_error():
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    with pytest.raises(FlopsInputError, match="probe input"):
        count_cost(m, input_hw=(16, 16))
    assert count_cost(m, input_hw=(8, 8)).macs == 6 * 6 * 4 * 27 + 144 * 2
    assert torch.is_grad_enabled()
