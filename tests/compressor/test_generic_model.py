"""prune / distill are generic: a structurally different two-task segmentation network
(ConvTranspose upsampling, PReLU, a residual add, an attention-style matmul, dict output) is
pruned, distilled a few steps, exported to ONNX and run in onnxruntime against torch."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compressor import load_checkpoint, save_checkpoint
from compressor.distill import DistillConfig, TapError, distill
from compressor.flops import count_params
from compressor.pruning import PruneConfig, PruningGraphError, prune

HW = (32, 32)


def cbp(ci: int, co: int, k: int = 3, s: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(ci, co, k, s, k // 2, bias=False), nn.BatchNorm2d(co), nn.PReLU(co)
    )


class Attention(nn.Module):
    """Single-head spatial self-attention with an output projection and a residual."""

    def __init__(self, c: int, d: int, flat_view: bool = False):
        super().__init__()
        self.q, self.k, self.v = nn.Conv2d(c, d, 1), nn.Conv2d(c, d, 1), nn.Conv2d(c, c, 1)
        self.proj = nn.Conv2d(c, c, 1)
        self.scale = d**-0.5
        self.flat_view = flat_view

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.q(x).flatten(2), self.k(x).flatten(2), self.v(x).flatten(2)
        attn = torch.softmax(torch.matmul(q.transpose(1, 2), k) * self.scale, dim=-1)
        y = torch.matmul(v, attn.transpose(1, 2))
        # view(b, c, ...) ties v's width to x's in Python, invisible to any graph tracer
        y = y.view(b, c, h, w) if self.flat_view else y.view(b, -1, h, w)
        return x + self.proj(y)


class RoadEdgeNet(nn.Module):
    """Two segmentation tasks: 'road' (3 classes) and 'edge' (2 classes)."""

    def __init__(self, flat_view: bool = False):
        super().__init__()
        self.stem, self.down, self.res = cbp(3, 32, 3, 2), cbp(32, 64, 3, 2), cbp(64, 64)
        self.attn = Attention(64, 16, flat_view)
        self.road = nn.Sequential(
            nn.ConvTranspose2d(64, 32, 2, 2),
            nn.BatchNorm2d(32),
            nn.PReLU(32),
            nn.ConvTranspose2d(32, 32, 2, 2),
            nn.PReLU(),
            nn.Conv2d(32, 3, 1),
        )
        self.edge = nn.Sequential(
            nn.ConvTranspose2d(64, 32, 4, 4), nn.BatchNorm2d(32), nn.PReLU(), nn.Conv2d(32, 2, 1)
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.down(self.stem(x))
        x = self.attn(x + self.res(x))
        return {"road": self.road(x), "edge": self.edge(x)}


def loss_fn(out: dict, batch: dict) -> dict[str, torch.Tensor]:
    return {
        "road": F.cross_entropy(out["road"], batch["road"]),
        "edge": F.cross_entropy(out["edge"], batch["edge"]),
    }


def make_batches(n: int = 3, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.randn(4, 3, *HW, generator=g)
        road = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()  # learnable from the input
        out.append({"images": x, "road": road, "edge": (x[:, 2] > 0).long()})
    return out


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    teacher = RoadEdgeNet()
    student = copy.deepcopy(teacher)
    res = prune(
        student,
        loss_fn,
        make_batches(),
        PruneConfig(ratio=0.3, calib_batches=3, flops_input_hw=None),
        progress=False,
    )
    return teacher, student, res


def test_generic_model_is_pruned_with_coupled_channels(pair):
    teacher, student, res = pair
    assert res.report.params_ratio >= 0.3
    assert count_params(student) == res.report.params_after
    # the residual trunk is one group: down, res and proj shrink together, PReLU with them
    assert student.down[0].out_channels == student.res[0].out_channels
    assert student.attn.proj.out_channels == student.down[0].out_channels < 64
    assert student.down[2].num_parameters == student.down[0].out_channels
    assert student.road[0].in_channels == student.down[0].out_channels  # ConvTranspose input
    # prediction convs keep their classes; matmul-coupled q/k/v are left alone and reported
    assert student.road[5].out_channels == 3 and student.edge[3].out_channels == 2
    frozen = {f["root"]: f for f in res.report.frozen}
    assert any("matrix product" in f["reason"] for f in frozen.values())
    assert student.attn.q.out_channels == 16 and student.attn.v.out_channels == 64
    out = student(torch.randn(2, 3, *HW))
    assert out["road"].shape == (2, 3, *HW) and out["edge"].shape == (2, 2, *HW)


def test_generic_checkpoint_rebuilds_from_shapes(pair, tmp_path):
    _, student, res = pair
    path = tmp_path / "toy.pt"
    save_checkpoint(path, student, pruning=res.record, model_name="road_edge", model_config={})
    loaded, ckpt = load_checkpoint(path, model=RoadEdgeNet())
    student.eval()
    loaded.eval()
    x = torch.randn(2, 3, *HW)
    assert torch.equal(student(x)["road"], loaded(x)["road"])
    assert ckpt.pruning["layers"]["down.0"]["out"][1] == student.down[0].out_channels


def test_untraceable_coupling_is_caught_not_shipped():
    torch.manual_seed(0)
    model = RoadEdgeNet(flat_view=True)
    with pytest.raises(PruningGraphError, match="no longer runs.*protect"):
        prune(
            model,
            loss_fn,
            make_batches(1),
            PruneConfig(ratio=0.3, calib_batches=1, flops_input_hw=None),
            progress=False,
        )


def test_distill_prune_export_onnx_parity(pair, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    teacher, student, _ = pair
    student = copy.deepcopy(student)
    keys = set(student.state_dict())
    res = distill(
        teacher,
        student,
        loss_fn,
        DistillConfig(epochs=3, lr=2e-3),
        taps=("down", "res", "attn"),  # module paths: this model declares no feature_info
        batches=make_batches(),
        progress=False,
    )
    assert [h["epoch"] for h in res.history] == [1, 2, 3]
    assert res.history[-1]["kd"] < res.history[0]["kd"]  # adapters + student learn the taps
    assert set(res.student.state_dict()) == keys  # adapters are not part of the student
    assert all(not p.requires_grad for p in teacher.parameters()) and not teacher.training
    model = res.student.eval()
    path = tmp_path / "toy.onnx"
    torch.onnx.export(
        model,
        (torch.zeros(1, 3, *HW),),
        str(path),
        opset_version=17,
        dynamo=False,
        input_names=["images"],
        output_names=["road", "edge"],
        dynamic_axes={"images": {0: "batch"}},
    )
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(2, 3, *HW, generator=torch.Generator().manual_seed(3))
    got = sess.run(None, {"images": x.numpy()})
    with torch.no_grad():
        ref = model(x)
    np.testing.assert_allclose(got[0], ref["road"].numpy(), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(got[1], ref["edge"].numpy(), rtol=1e-3, atol=1e-4)


def test_generic_model_needs_explicit_taps(pair):
    teacher, student, _ = pair
    with pytest.raises(TapError, match="declares no feature_info"):
        distill(
            teacher,
            copy.deepcopy(student),
            loss_fn,
            DistillConfig(),
            batches=make_batches(1),
            progress=False,
        )
