"""Importance math on hand-made groups and tiny nets: Taylor per channel over all of a channel's
slices, per-task normalisation, aggregation, gradient conflict, score forms, safe rule, per-slice
reductions, the planner's width rules, and calibration against brute-force autograd."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from compressor.pruning import PruneConfig, PruneConfigError, group_scores, register_importance
from compressor.pruning.calibrate import CalibrationStats
from compressor.pruning.group import ELEM, IN, OUT, ChannelGroup, LayerSlice, channel_sums
from compressor.pruning.importance import (
    ImportanceContext,
    build_importance,
    conflict,
    list_importances,
    normalize,
    safe_mask,
)


def _group(n=3):
    idx = torch.arange(n)
    return ChannelGroup(0, "a", n, [LayerSlice("a", OUT, idx, idx), LayerSlice("b", IN, idx, idx)])


def _stats(taylor_a, taylor_b, gram=None, tasks=("x", "y")):
    """taylor_*: [T, B, 3] per-slice Taylor terms (already summed over each slice)."""
    g = {} if gram is None else {("a", OUT): gram, ("b", IN): torch.zeros_like(gram)}
    return CalibrationStats(
        tasks, taylor_a.shape[1], {("a", OUT): taylor_a, ("b", IN): taylor_b}, g, {}
    )


def _score(stats, **kw):
    cfg = PruneConfig(**{"group_rescale": "none", **kw})  # raw scores unless a test says
    return build_importance(ImportanceContext(cfg, {}, stats))(_group())


def test_taylor_sums_slices_before_the_absolute_value():
    # channel 0: +1 from the producer, -1 from the consumer -> cancels; channel 1: 1 + 1
    a = torch.tensor([[[1.0, 1.0, 0.5]], [[0.0, 0.0, 0.0]]])
    b = torch.tensor([[[-1.0, 1.0, 0.5]], [[0.0, 0.0, 0.0]]])
    s = _score(_stats(a, b), importance="tci", normalize="max", safe_top_q=0.0)
    assert s.per_task[0].tolist() == [0.0, 1.0, 0.5]
    assert s.per_task[1].tolist() == [0.0, 0.0, 0.0]  # task y does not use this group
    assert s.score.tolist() == [0.0, 1.0, 0.5]


def test_taylor_averages_absolute_values_over_batches():
    a = torch.tensor([[[2.0, 1.0, 1.0], [-2.0, 1.0, 1.0]]])  # batch values of opposite sign
    b = torch.zeros_like(a)
    s = _score(_stats(a, b, tasks=("x",)), importance="tci", normalize="max", safe_top_q=0.0)
    assert s.per_task[0].tolist() == [1.0, 0.5, 0.5]  # |2| and |-2| -> mean 2, not 0


def test_taylor_sum_baseline_mixes_tasks_before_the_absolute_value():
    a = torch.tensor([[[1.0, 1.0, 1.0]], [[-1.0, 1.0, 0.0]]])
    b = torch.zeros_like(a)
    s = _score(_stats(a, b), importance="taylor_sum", normalize="max")
    assert s.score.tolist() == [0.0, 1.0, 0.5]  # task terms cancel on channel 0
    assert not s.safe.any()


@pytest.mark.parametrize(
    "how,expected",
    [
        ("mean", [0.5, 1.0, 1.5]),
        ("max", [1 / 3, 2 / 3, 1.0]),
        ("l2", [1 / 14**0.5, 2 / 14**0.5, 3 / 14**0.5]),
    ],
)
def test_normalizers(how, expected):
    x = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    out = normalize(x, how)
    assert out[0].tolist() == pytest.approx(expected)
    assert out[1].tolist() == [0.0, 0.0, 0.0]


def test_normalisation_is_scale_free_even_for_tiny_gradients():
    x = torch.tensor([[1e-20, 2e-20, 3e-20]])
    assert normalize(x, "mean")[0].tolist() == pytest.approx([0.5, 1.0, 1.5])


@pytest.mark.parametrize(
    "agg,expected",
    [
        ("max", [2.0, 1.0, 1.0]),
        ("mean", [1.5, 1.0, 0.5]),
        ("sum", [3.0, 2.0, 1.0]),
    ],
)
def test_aggregation(agg, expected):
    a = torch.tensor([[[1.0, 1.0, 1.0]], [[2.0, 1.0, 0.0]]])  # after mean-normalising: same
    s = _score(_stats(a, torch.zeros_like(a)), importance="tci", aggregate=agg, safe_top_q=0.0)
    assert s.score.tolist() == pytest.approx(expected)


def test_weighted_aggregation_uses_task_weights_and_rejects_unknown_tasks():
    a = torch.tensor([[[1.0, 1.0, 1.0]], [[2.0, 1.0, 0.0]]])
    st = _stats(a, torch.zeros_like(a))
    s = _score(
        st, importance="tci", aggregate="weighted", task_weights=(("y", 3.0),), safe_top_q=0.0
    )
    assert s.score.tolist() == pytest.approx([1 + 3 * 2.0, 1 + 3 * 1.0, 1 + 0.0])
    with pytest.raises(PruneConfigError, match="'det'"):
        _score(st, importance="tci", aggregate="weighted", task_weights=(("det", 1.0),))


def test_conflict_is_mean_negative_cosine_over_task_pairs():
    # 2 tasks, 3 channels: opposite, identical, orthogonal gradients
    dots = torch.tensor([[[1.0, 1.0, 1.0], [-1.0, 1.0, 0.0]], [[-1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]])
    assert conflict(dots).tolist() == pytest.approx([1.0, 0.0, 0.0])
    assert conflict(dots * 1e-30).tolist() == pytest.approx([1.0, 0.0, 0.0])  # no eps trouble
    assert conflict(dots[:1, :1]).tolist() == [0.0, 0.0, 0.0]  # one task: no conflict


@pytest.mark.parametrize(
    "mode,expected", [("multiplicative", [0.5, 1.0, 1.0]), ("additive", [0.5, 1.0, 1.0])]
)
def test_gcp_penalises_conflicting_channels(mode, expected):
    a = torch.ones(2, 1, 3)
    gram = torch.tensor([[[1.0, 1.0, 1.0], [-1.0, 1.0, 0.0]], [[-1.0, 1.0, 0.0], [1.0, 1, 1]]])
    st = _stats(a, torch.zeros_like(a), gram=gram)
    s = _score(st, importance="tci_gcp", conflict_mode=mode, conflict_lambda=0.5, safe_top_q=0.0)
    assert s.conflict.tolist() == pytest.approx([1.0, 0.0, 0.0])
    assert s.score.tolist() == pytest.approx(expected)  # I = 1 everywhere: both forms agree
    plain = _score(st, importance="tci", safe_top_q=0.0)
    assert plain.score.tolist() == pytest.approx([1.0, 1.0, 1.0])


def test_safe_rule_protects_each_tasks_top_channels():
    per_task = torch.tensor(
        [[0.1, 0.2, 0.3, 5.0, 0.4], [3.0, 0.1, 0.1, 0.1, 0.1], [0.0, 0.0, 0.0, 0.0, 0.0]]
    )
    assert safe_mask(per_task, 0.2).tolist() == [True, False, False, True, False]
    assert not safe_mask(per_task, 0.0).any()
    half = set(safe_mask(per_task, 0.5).nonzero().view(-1).tolist())
    assert {0, 2, 3, 4} <= half  # ceil(0.5 * 5) = 3 per task


def test_planner_widths_follow_round_to_min_width_and_safe_rule():
    from compressor.pruning.importance import GroupScores
    from compressor.pruning.plan import Planner

    groups = [
        ChannelGroup(0, "a", 40, []),
        ChannelGroup(1, "b", 12, []),
        ChannelGroup(2, "c", 32, []),
    ]
    safe_c = torch.zeros(32, dtype=torch.bool)
    safe_c[:20] = True  # 20 safe channels -> keeps at least 24
    scores = {
        0: GroupScores(torch.arange(40.0), torch.zeros(40, dtype=torch.bool)),
        1: GroupScores(torch.arange(12.0), torch.zeros(12, dtype=torch.bool)),
        2: GroupScores(torch.zeros(32), safe_c),
    }
    planner = Planner(groups, scores, cost=None, round_to=8, min_width=8)
    prev = {0: 0, 1: 0, 2: 0}
    for cut in range(0, planner.n_candidates + 1, 3):
        masks = planner.masks_at(cut)
        for g in groups:
            n_pruned = int(masks[g.index].sum()) if g.index in masks else 0
            keep = g.size - n_pruned
            assert keep == g.size or (keep % 8 == 0 and keep >= 8), (g.root, keep)
            assert n_pruned >= prev[g.index]  # monotone in the cut
            prev[g.index] = n_pruned
        if 0 in masks:
            assert masks[0].nonzero().view(-1).tolist() == list(range(int(masks[0].sum())))
        if 2 in masks:
            assert not (masks[2] & safe_c).any()
    full = planner.masks_at(planner.n_candidates)
    assert 40 - int(full[0].sum()) == 8 and 12 - int(full[1].sum()) == 8
    assert 32 - int(full[2].sum()) == 24


def test_registry_is_strict():
    assert set(list_importances()) >= {"random", "l1", "taylor_sum", "tci", "tci_gcp"}
    with pytest.raises(PruneConfigError, match="already registered"):
        register_importance("tci")(lambda ctx: None)


def _brute_sums(m, kind, w):
    """Reference per-channel sums by slicing, one channel at a time."""
    if isinstance(m, nn.Linear):
        return torch.stack(
            [
                (w[c] if kind == OUT else w[:, c]).sum()
                for c in range(w.shape[0 if kind == OUT else 1])
            ]
        )
    if m.transposed:  # [in, out/g, k]
        if kind == IN:
            return torch.stack([w[c].sum() for c in range(w.shape[0])])
        per = w.shape[1]
        return torch.stack(
            [
                w[
                    (c // per) * (w.shape[0] // m.groups) : (c // per + 1)
                    * (w.shape[0] // m.groups),
                    c % per,
                ].sum()
                for c in range(per * m.groups)
            ]
        )
    if kind == OUT:
        return torch.stack([w[c].sum() for c in range(w.shape[0])])
    per_g_out, per_g_in = w.shape[0] // m.groups, w.shape[1]
    return torch.stack(
        [
            w[(c // per_g_in) * per_g_out : (c // per_g_in + 1) * per_g_out, c % per_g_in].sum()
            for c in range(per_g_in * m.groups)
        ]
    )


@pytest.mark.parametrize(
    "layer",
    [
        nn.Conv2d(4, 6, 3),
        nn.Conv2d(4, 6, 3, groups=2),
        nn.ConvTranspose2d(4, 6, 2, 2),
        nn.ConvTranspose2d(4, 6, 2, 2, groups=2),
        nn.Linear(4, 6),
    ],
)
def test_channel_sums_match_slicing(layer):
    w = torch.randn_like(layer.weight)
    for kind in (OUT, IN):
        got = channel_sums(layer, kind, {"weight": w})
        assert torch.allclose(got, _brute_sums(layer, kind, w), atol=1e-5), kind
    bn = nn.BatchNorm2d(5)
    assert (
        channel_sums(bn, ELEM, {"weight": torch.ones(5), "bias": torch.ones(5)}).tolist()
        == [2.0] * 5
    )


class TwoTask(nn.Module):
    """conv -> bn -> relu -> two 1x1 heads; one prunable group (conv out, bn, heads' inputs)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.h1 = nn.Conv2d(16, 2, 1)
        self.h2 = nn.Conv2d(16, 3, 1)

    def forward(self, x):
        f = torch.relu(self.bn(self.conv(x)))
        return {"a": self.h1(f), "b": self.h2(f)}


def _two_task_loss(out, batch):
    return {"a": out["a"].pow(2).mean(), "b": (out["b"] - 1).abs().mean()}


def test_calibrated_taylor_equals_brute_force_autograd():
    torch.manual_seed(0)
    model = TwoTask()
    model.bn.weight.data.uniform_(0.5, 1.5)
    batches = [torch.randn(2, 3, 8, 8) for _ in range(3)]
    cfg = PruneConfig(
        importance="tci",
        normalize="max",
        aggregate="max",
        safe_top_q=0.0,
        calib_batches=3,
        flops_input_hw=None,
    )
    groups, scores = group_scores(model, _two_task_loss, batches, cfg)
    (g,) = [g for g in groups if g.root == "conv"]
    # brute force: per task, per batch, per channel |sum of w*g over conv row, bn affine,
    # heads' input columns|, averaged over batches; BN in eval like calibration
    model.train()
    model.bn.eval()
    params = [model.conv.weight, model.bn.weight, model.bn.bias, model.h1.weight, model.h2.weight]
    per_task = torch.zeros(2, 16)
    for x in batches:
        losses = _two_task_loss(model(x), x)
        for t, key in enumerate(("a", "b")):
            gs = torch.autograd.grad(losses[key], params, retain_graph=True, allow_unused=True)
            prods = [p.detach() * (gr if gr is not None else 0) for p, gr in zip(params, gs)]
            c = (
                prods[0].flatten(1).sum(1)
                + prods[1]
                + prods[2]
                + prods[3].sum((0, 2, 3))
                + prods[4].sum((0, 2, 3))
            )
            per_task[t] += c.abs() / len(batches)
    expected = normalize(per_task, "max")
    assert torch.allclose(scores[g.index].per_task, expected, atol=1e-5)
    assert torch.allclose(scores[g.index].score, expected.amax(0), atol=1e-5)


def test_group_rescale_removes_the_max_over_tasks_inflation():
    # same per-task shape, but one group serves two tasks: max over tasks inflates its scores
    shared = torch.tensor([[[1.0, 2.0, 3.0]], [[3.0, 2.0, 1.0]]])
    single = torch.tensor([[[1.0, 2.0, 3.0]], [[0.0, 0.0, 0.0]]])

    def mean_score(taylor, how):
        st = _stats(taylor, torch.zeros_like(taylor))
        return float(_score(st, importance="tci", group_rescale=how, safe_top_q=0.0).score.mean())

    assert mean_score(shared, "none") > 1.2 * mean_score(single, "none")
    assert mean_score(shared, "aggregate") == pytest.approx(mean_score(single, "aggregate"))
    assert mean_score(shared, "score") == pytest.approx(1.0)
