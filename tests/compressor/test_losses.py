"""YolopLoss: target assignment, CIoU, per-task outputs, weights, seg terms, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from compressor import build_model
from compressor.losses import (
    LossConfigError,
    LossInputError,
    YolopLoss,
    YolopLossConfig,
    total_loss,
)
from compressor.losses.detection import assign_targets, ciou
from compressor.models.yolop import YOLOP_ANCHORS, YOLOP_STRIDES

ANCHORS = torch.tensor(YOLOP_ANCHORS, dtype=torch.float32)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: torch on one thread


def _targets(*rows):
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 6)


def test_assignment_matches_by_shape_ratio_and_adds_the_nearer_neighbours():
    # 40x40 px box: no P3 anchor is within side ratio 4 (40/5 = 8); of P4 only (12, 31) is
    # (40/12 = 3.3, 40/31 = 1.3; (7, 18) and (6, 39) have 40/7, 40/6 > 4).
    t = _targets([0, 0, 10.3 * 16, 20.7 * 16, 40, 40])
    assert assign_targets(t, ANCHORS[0], 8, (96, 160), 4.0).b.numel() == 0
    for level, stride in [(1, 16)]:
        tg = assign_targets(t, ANCHORS[level], stride, (48, 80), 4.0)
        assert set(tg.a.tolist()) == {2}
        # centre cell (10, 20), left (frac .3 < .5) and below (frac .7 >= .5)
        cells = sorted(zip(tg.gx.tolist(), tg.gy.tolist()))
        assert cells == [(9, 20), (10, 20), (10, 21)]
        # offsets inside the assigned cell stay within the decodable range (-0.5, 1.5)
        assert (tg.box[:, :2] > -0.5).all() and (tg.box[:, :2] < 1.5).all()
        assert torch.allclose(tg.box[:, 2:], torch.tensor([2.5, 2.5]).expand(3, 2))


def test_assignment_keeps_neighbours_inside_the_grid():
    t = _targets([0, 0, 0.2 * 8, 0.2 * 8, 12, 12])  # top-left corner cell of P3
    tg = assign_targets(t, ANCHORS[0], 8, (8, 8), 4.0)
    assert tg.b.numel() > 0
    assert (tg.gx == 0).all() and (tg.gy == 0).all()


def test_ciou_is_one_for_identical_boxes_and_negative_far_apart():
    a = torch.tensor([[5.0, 5.0, 2.0, 4.0]])
    assert torch.allclose(ciou(a, a), torch.ones(1), atol=1e-5)
    far = torch.tensor([[50.0, 50.0, 2.0, 4.0]])
    assert ciou(a, far).item() < 0
    # same centre and aspect ratio: CIoU == IoU (0.25 for half-size box)
    half = torch.tensor([[5.0, 5.0, 1.0, 2.0]])
    assert math.isclose(ciou(a, half).item(), 0.25, abs_tol=1e-4)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_model("yolop", width=0.25, depth=0.33).train()


def _batch(h=64, w=128, b=2):
    g = torch.Generator().manual_seed(0)
    return {
        "images": torch.randn(b, 3, h, w, generator=g),
        "targets": _targets([0, 0, 40, 30, 20, 24], [1, 0, 90, 40, 30, 20]),
        "drivable": (torch.rand(b, h, w, generator=g) > 0.5).long(),
        "lane": (torch.rand(b, h, w, generator=g) > 0.9).long(),
    }


def test_returns_each_task_separately_with_gradients(tiny):
    loss = YolopLoss.for_model(tiny)
    batch = _batch()
    out = loss(tiny(batch["images"]), batch)
    assert set(out) == {"det", "drivable", "lane"}
    for v in out.values():
        assert v.ndim == 0 and v.requires_grad and torch.isfinite(v)
    assert set(loss.components) == {
        "det_box",
        "det_obj",
        "det_cls",
        "drivable_bce",
        "lane_bce",
        "lane_tversky",
    }
    assert loss.components["det_box"] > 0  # there are positives
    total = total_loss(out)
    assert torch.isclose(total, sum(out.values()))


def test_task_weights_scale_only_their_task(tiny):
    batch = _batch()
    outputs = tiny(batch["images"])
    base = YolopLoss.for_model(tiny)(outputs, batch)
    heavy = YolopLoss.for_model(tiny, YolopLossConfig(det_weight=3.0, lane_weight=0.0))(
        outputs, batch
    )
    assert torch.isclose(heavy["det"], 3 * base["det"])
    assert torch.isclose(heavy["drivable"], base["drivable"])
    assert heavy["lane"].item() == 0.0


def test_seg_only_outputs_give_seg_losses_only(tiny):
    batch = _batch()
    outputs = {k: v for k, v in tiny(batch["images"]).items() if k != "det"}
    out = YolopLoss.for_model(tiny)(outputs, batch)
    assert set(out) == {"drivable", "lane"}


def test_seg_terms_are_small_for_correct_and_large_for_wrong_logits(tiny):
    batch = _batch()
    loss = YolopLoss.for_model(tiny)
    onehot = torch.nn.functional.one_hot(batch["lane"], 2).permute(0, 3, 1, 2).float()
    right = {
        "drivable": (
            torch.nn.functional.one_hot(batch["drivable"], 2).permute(0, 3, 1, 2).float() - 0.5
        )
        * 40,
        "lane": (onehot - 0.5) * 40,
    }
    wrong = {k: -v for k, v in right.items()}
    good, bad = loss(right, batch), loss(wrong, batch)
    assert good["drivable"] < 1e-3 and good["lane"] < 1e-3
    assert bad["drivable"] > 1.0 and bad["lane"] > 1.0
    assert loss.components["lane_tversky"] > 0.99  # no overlap at all


def test_no_targets_still_gives_a_finite_objectness_loss(tiny):
    batch = _batch()
    batch["targets"] = torch.zeros(0, 6)
    out = YolopLoss.for_model(tiny)(tiny(batch["images"]), batch)
    assert torch.isfinite(out["det"]) and out["det"] > 0


def test_bad_inputs_raise_named_errors(tiny):
    loss = YolopLoss.for_model(tiny)
    batch = _batch()
    tiny.eval()
    try:
        decoded = tiny(batch["images"])
    finally:
        tiny.train()
    with pytest.raises(LossInputError, match="model.train"):
        loss(decoded, batch)
    with pytest.raises(LossInputError, match="do not match"):
        loss({"lane": torch.zeros(2, 2, 32, 32)}, batch)
    with pytest.raises(LossConfigError, match="non-negative"):
        YolopLossConfig(box_gain=-1)
    with pytest.raises(LossConfigError, match="level_balance"):
        YolopLoss(ANCHORS, YOLOP_STRIDES, YolopLossConfig(level_balance=(1.0, 1.0)))
    with pytest.raises(LossInputError, match="anchors_px"):
        YolopLoss(ANCHORS[:2], YOLOP_STRIDES)
