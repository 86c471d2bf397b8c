"""The anchor-free DFL head on a test-only three-task model that is not YOLOP: forward shapes and
the spec's output contract, the eval output decoded by the runtime's numpy decoder equals the
torch decode (before and after NMS), the centre-sampling assignment and DFL loss on hand cases,
per-task losses with gradients that go down when trained, and task-aware pruning."""

from __future__ import annotations

import copy
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "models"))
from anchor_free_three_task import INPUT_HW, SPEC, STRIDES, build  # noqa: E402

from compressor.flops import count_params  # noqa: E402
from compressor.losses.anchor_free import AnchorFreeLoss, assign, dfl_loss  # noqa: E402
from compressor.losses.yolop import LossInputError, total_loss  # noqa: E402
from compressor.models.heads import AnchorFreeHead, decode_torch  # noqa: E402
from compressor.models.heads.anchor_free import AnchorFreeHeadError, level_points  # noqa: E402
from compressor.models.registry import spec_of  # noqa: E402
from compressor.pruning import PruneConfig, prune  # noqa: E402
from runtime.boxes import postprocess_detections  # noqa: E402
from runtime.decoders import get_decoder  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: torch on one thread

H, W = INPUT_HW
N_ROWS = sum((H // s) * (W // s) for s in STRIDES)


def make_batch(seed: int = 0, b: int = 2) -> dict:
    """Images with bright boxes that are the `vehicle` targets (img, cls, cx, cy, w, h pixels),
    drivable = the lower half, lane = two columns."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(b, 3, H, W, generator=g) * 0.2
    boxes = [(0, 40, 30, 24, 16), (0, 100, 20, 12, 12), (1, 64, 40, 50, 30), (1, 10, 10, 6, 6)]
    rows = []
    for i, cx, cy, w, h in boxes:
        if i < b:
            images[i, :, cy - h // 2 : cy + h // 2, cx - w // 2 : cx + w // 2] += 1.5
            rows.append([i, 0, cx, cy, w, h])
    drivable = torch.zeros(b, H, W, dtype=torch.long)
    drivable[:, H // 2 :] = 1
    lane = torch.zeros(b, H, W, dtype=torch.long)
    lane[:, :, [30, 31, 90, 91]] = 1
    images[:, 1] += drivable - 0.5 + lane
    return {
        "images": images,
        "targets": torch.tensor(rows, dtype=torch.float32),
        "drivable": drivable,
        "lane": lane,
    }


def test_forward_shapes_and_spec_contract():
    model = build()
    assert spec_of(model) is SPEC
    assert set(model.det_head.prediction_convs("det_head")) <= set(SPEC.protected)
    for name in SPEC.protected:
        model.get_submodule(name)  # every protected name is a real module
    x = make_batch()["images"]
    model.train()
    out = model(x)
    assert [tuple(m.shape) for m in out["det"]] == [(2, 65, H // s, W // s) for s in STRIDES]
    assert out["drivable"].shape == out["lane"].shape == (2, 2, H, W)
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert out["det"].shape == (2, N_ROWS, 4 * 16 + 1)
    SPEC.check_outputs(out, INPUT_HW, 2)
    params = SPEC.decoder_info(model)
    assert params == {"strides": [8, 16, 32], "reg_max": 16}
    dec = get_decoder(SPEC.det.decoder)
    dec.check_params(params)
    assert dec.candidates(INPUT_HW, params) == N_ROWS
    # taps name real modules with their real channels and strides
    feats = {}
    hooks = [
        model.get_submodule(f.module).register_forward_hook(
            lambda m, i, o, n=f.name: feats.__setitem__(n, o.shape)
        )
        for f in model.feature_info
    ]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    for f in model.feature_info:
        assert feats[f.name] == (2, f.channels, H // f.stride, W // f.stride)
    assert set(SPEC.taps) <= {f.name for f in model.feature_info}


def test_model_output_decodes_the_same_in_numpy_and_torch():
    model = build()
    # spread the box logits so the decoded boxes differ from one another
    with torch.no_grad():
        for conv in model.det_head.box:
            conv[2].weight.mul_(20)
        for conv in model.det_head.cls:
            conv[2].bias.fill_(0.0)
    model.eval()
    with torch.no_grad():
        raw = model(make_batch()["images"])["det"]
    params = SPEC.decoder_info(model)
    ours = get_decoder("anchor_free_dfl").decode(raw.numpy(), INPUT_HW, params)
    ref = decode_torch(raw, INPUT_HW, params["strides"], params["reg_max"]).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-4)
    assert ours[..., 2:4].std() > 1.0  # boxes really differ
    kept_np = postprocess_detections(ours, 0.25, 0.45, 300)
    kept_t = postprocess_detections(ref, 0.25, 0.45, 300)
    assert all(len(k) > 0 for k in kept_np)
    for a, b in zip(kept_np, kept_t):
        assert a.shape == b.shape
        np.testing.assert_allclose(a[:, :5], b[:, :5], atol=1e-3)


def test_centre_sampling_assignment_hand_cases():
    grids = [(H // s, W // s) for s in STRIDES]  # (8, 16), (4, 8), (2, 4)
    points, row_strides = level_points(grids, STRIDES)
    t = torch.tensor(
        [
            [0, 0, 40.0, 24.0, 32.0, 32.0],  # 4x4 cells on stride 8
            [0, 0, 44.0, 28.0, 8.0, 8.0],  # small box inside the first: wins the shared points
            [1, 0, 3.0, 3.0, 2.0, 2.0],  # smaller than a cell: only its centre cell
        ]
    )
    a = assign(t, points, row_strides, grids[0], reg_max=16, radius=2.5, batch=2)
    got = {(int(b), int(n)) for b, n in zip(a.b, a.n)}
    assert (1, 0) in got and sum(b == 1 for b, _ in got) == 1  # tiny box: centre cell (0, 0)
    # the small box owns stride-8 row (y=3, x=5) = point (44, 28) px, its centre
    row = 3 * 16 + 5
    k = [i for i, (b, n) in enumerate(zip(a.b, a.n)) if (int(b), int(n)) == (0, row)]
    assert len(k) == 1
    np.testing.assert_allclose(a.box[k[0]].numpy(), [5, 3, 6, 4])  # (40, 24, 48, 32) / 8
    # big box positives: inside it and within 2.5 cells of its centre (40, 24) on stride 8;
    # on stride 16 its sides (<= 1.5 cells) fit too; stride 32 has no point inside it
    big = {(int(n)) for b, n, bx in zip(a.b, a.n, a.box) if int(b) == 0 and bx[2] - bx[0] > 1.5}
    s8 = {n for n in big if n < 128}
    xs = sorted({(n % 16) for n in s8})
    ys = sorted({(n // 16) for n in s8})
    assert xs == [3, 4, 5, 6] and ys == [1, 2, 3, 4]  # centres 28..52 px x, 12..36 px y
    assert len(s8) == 16 - 1  # minus the point the small box took
    assert any(128 <= n < 160 for n in big) and not any(n >= 160 for n in big)
    # no targets: no positives, no error
    empty = assign(torch.zeros(0, 6), points, row_strides, grids[0], 16, 2.5, 2)
    assert empty.b.numel() == 0


def test_dfl_loss_is_smallest_at_the_target_split():
    reg_max, d = 8, 2.3  # target 2.3 cells: 70 % on bin 2, 30 % on bin 3
    target = torch.full((1, 4), d)
    probs = torch.full((4, reg_max), 1e-9)
    probs[:, 2], probs[:, 3] = 0.7, 0.3
    best = dfl_loss(probs.log().reshape(1, -1), target, reg_max)
    entropy = -(0.7 * math.log(0.7) + 0.3 * math.log(0.3))
    assert abs(float(best) - entropy) < 1e-5
    shifted = torch.full((4, reg_max), 1e-9)
    shifted[:, 3], shifted[:, 4] = 0.7, 0.3
    assert float(dfl_loss(shifted.log().reshape(1, -1), target, reg_max)) > float(best) + 1.0


def test_loss_gives_per_task_scalars_with_gradients():
    model = build()
    model.train()
    batch = make_batch()
    loss_fn = SPEC.loss(model)
    losses = loss_fn(model(batch["images"]), batch)
    assert set(losses) == {"det", "drivable", "lane"}
    for task, value in losses.items():
        assert value.ndim == 0 and value.requires_grad and float(value.detach()) > 0, task
    assert all(v > 0 for v in loss_fn.det.components.values())
    # each task's gradient reaches its own prediction conv and not another task's
    model.zero_grad()
    losses["det"].backward(retain_graph=True)
    assert model.det_head.box[0][2].weight.grad.abs().sum() > 0
    assert model.det_head.cls[2][2].weight.grad.abs().sum() > 0
    assert model.drivable_head[1].weight.grad is None
    model.zero_grad()
    losses["lane"].backward()
    assert model.lane_head[3].weight.grad.abs().sum() > 0
    assert model.det_head.box[0][2].weight.grad is None


def test_a_few_steps_lower_the_loss():
    model = build()
    model.train()
    batch = make_batch()
    loss_fn = SPEC.loss(model)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for _ in range(12):
        losses = loss_fn(model(batch["images"]), batch)
        history.append({k: float(v.detach()) for k, v in losses.items()})
        opt.zero_grad()
        total_loss(losses).backward()
        opt.step()
    first, last = history[0], history[-1]
    assert sum(last.values()) < 0.7 * sum(first.values()), (first, last)
    assert last["det"] < 0.7 * first["det"], (first, last)
    for task in first:  # the thin-lane Tversky term moves slowest, but moves
        assert last[task] < 0.95 * first[task], (task, first, last)


def test_errors_name_what_is_wrong():
    with pytest.raises(AnchorFreeHeadError, match=r"one in_channels value per stride"):
        AnchorFreeHead([16, 16], (8, 16, 32), nc=1)
    model = build()
    model.eval()
    with torch.no_grad():
        out = model(make_batch()["images"])
    loss = AnchorFreeLoss(STRIDES, nc=1)
    with pytest.raises(LossInputError, match="list of 3 level maps.*model.train"):
        loss(out["det"], make_batch()["targets"])
    model.train()
    maps = model(make_batch()["images"])["det"]
    bad = make_batch()["targets"].clone()
    bad[0, 1] = 3
    with pytest.raises(LossInputError, match=r"target classes \[0, 3\] outside 0..0"):
        loss(maps, bad)
    with pytest.raises(AnchorFreeHeadError, match=r"expected \[B, 168, 64 \+ classes\]"):
        decode_torch(out["det"][:, 1:], INPUT_HW, STRIDES, 16)


def test_prune_tci_gcp_shrinks_the_model_and_keeps_its_outputs():
    model = build()
    before = count_params(model)
    batches = [make_batch(seed) for seed in range(2)]
    res = prune(
        model,
        SPEC.loss(model),
        batches,
        PruneConfig(ratio=0.3, importance="tci_gcp", calib_batches=2, flops_input_hw=None),
        protected=SPEC.protected,
        example_inputs=batches[0]["images"],
        progress=False,
    )
    assert res.report.params_ratio >= 0.25
    assert count_params(model) == res.report.params_after < before
    head = model.det_head
    assert [b[2].out_channels for b in head.box] == [64] * 3
    assert [c[2].out_channels for c in head.cls] == [1] * 3
    assert model.drivable_head[1].out_channels == model.lane_head[3].out_channels == 2
    assert (
        any(b[0].conv.out_channels < 32 for b in head.box) or model.stage4[0][0].out_channels < 96
    )
    x = batches[1]["images"]
    model.train()
    assert [tuple(m.shape) for m in model(x)["det"]] == [(2, 65, H // s, W // s) for s in STRIDES]
    model.eval()
    with torch.no_grad():
        out = model(x)
    SPEC.check_outputs(out, INPUT_HW, 2)
    assert out["det"].shape == (2, N_ROWS, 65)
    # the pruned model still trains with the loss built from it, and its taps follow the widths
    model.train()
    losses = SPEC.loss(model)(model(x), batches[1])
    assert all(torch.isfinite(v) for v in losses.values())
    assert model.feature_info[2].channels == model.stage4[1].body[1].out_channels
    assert copy.deepcopy(model) is not model
