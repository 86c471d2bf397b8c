"""The importance registry is the one list of importances: a criterion registered by the user is
accepted by PruneConfig, listed by `mtc-compress --help`, drives `prune` end to end (the channels
it ranks lowest are the ones removed), and survives the compress state file; an unknown name
lists the registered ones with a close match."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from compressor.cli.compress import build_parser, config_from_args
from compressor.compress import CompressConfig
from compressor.compress_resume import load_state, save_state
from compressor.pruning import (
    PruneConfig,
    PruneConfigError,
    list_importances,
    prune,
    register_importance,
    unregister_importance,
)
from compressor.pruning.importance import GroupScores, ImportanceContext, normalize
from compressor.pruning.report import PruneReport

pytestmark = pytest.mark.usefixtures("one_thread")

NAME = "test_l2"
C = 16  # channels of the prunable layer


def _l2_factory(ctx: ImportanceContext):
    """L2 norm of each output channel of the group's root conv (its weights only)."""

    def score(group):
        w = ctx.modules[group.root].weight.detach()
        raw = w.flatten(1).norm(dim=1)
        return GroupScores(normalize(raw, "mean"), torch.zeros(group.size, dtype=torch.bool))

    return score


@pytest.fixture
def test_l2():
    register_importance(NAME)(_l2_factory)
    yield NAME
    unregister_importance(NAME)


class TwoTask(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, C, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(C)
        self.a, self.b = nn.Conv2d(C, 2, 1), nn.Conv2d(C, 3, 1)

    def forward(self, x):
        y = torch.relu(self.bn(self.stem(x)))
        return {"a": self.a(y), "b": self.b(y)}


def _model() -> TwoTask:
    """Stem channels whose L2 and L1 rankings disagree: channels 0..7 spread small weights over
    all 27 entries (L1 1.35 > L2 0.26 .. ), channels 8..15 put one larger weight in one entry
    (L1 = L2 = 0.5 .. 0.57). L2 removes 0..7 first; L1 (or random) would not."""
    m = TwoTask()
    with torch.no_grad():
        w = torch.zeros(C, 3, 3, 3)
        for c in range(8):
            w[c] = 0.05 + 0.001 * c  # L2 = 27 ** 0.5 * ~0.05 ~ 0.26, L1 ~ 1.35
        for c in range(8, C):
            w[c, 0, 1, 1] = 0.5 + 0.01 * c  # L2 = L1 ~ 0.58 .. 0.65
        m.stem.weight.copy_(w)
    return m


def test_registered_importance_prunes_what_it_ranks_lowest(test_l2):
    assert NAME in list_importances()
    cfg = PruneConfig(importance=NAME, ratio=0.3, round_to=4, min_width=4, safe_top_q=0.0)
    assert cfg.importance == NAME and not cfg.needs_gradients
    batches = [torch.randn(2, 3, 16, 16)]
    res = prune(_model(), None, batches, cfg, progress=False)
    kept = res.record["layers"]["stem"]["kept_out"]
    removed = sorted(set(range(C)) - set(kept))
    assert removed and set(removed) <= set(range(8)), removed
    # the L2 ranking inside 0..7 is by the per-channel offset: the smallest go first
    assert removed == list(range(len(removed)))
    assert res.model.stem.out_channels == C - len(removed)
    l1 = prune(
        _model(),
        None,
        batches,
        PruneConfig(importance="l1", ratio=0.3, round_to=4, min_width=4),
        progress=False,
    )
    assert l1.record["layers"]["stem"]["kept_out"] != kept  # the registered function mattered


def test_unknown_importance_lists_the_registered_ones(test_l2):
    with pytest.raises(PruneConfigError) as e:
        PruneConfig(importance="test_l3")
    msg = str(e.value)
    assert "'test_l3' is not registered" in msg and "did you mean 'test_l2'" in msg
    for name in list_importances():
        assert name in msg
    assert "register_importance" in msg


def test_no_aliases_and_duplicates():
    for former_alias in ("tci+gcp", "magnitude", "taylor"):
        with pytest.raises(PruneConfigError, match="is not registered"):
            PruneConfig(importance=former_alias)
    assert PruneConfig(importance="tci_gcp").needs_conflict
    assert not PruneConfig(importance="tci").needs_conflict
    with pytest.raises(PruneConfigError, match="already registered"):
        register_importance("tci_gcp")(_l2_factory)
    assert list_importances().count("tci_gcp") == 1
    with pytest.raises(PruneConfigError, match="not registered"):
        unregister_importance("never_registered")


def test_cli_reads_the_registry(test_l2, tmp_path):
    help_text = " ".join(build_parser().format_help().split())
    assert NAME in help_text and "tci_gcp" in help_text
    argv = ["--teacher", "t.pt", "--data", "d", "-o", str(tmp_path), "--importance", NAME]
    assert config_from_args(build_parser().parse_args(argv)).prune.importance == NAME
    with pytest.raises(PruneConfigError, match="registered: .*test_l2"):
        config_from_args(build_parser().parse_args([*argv[:-1], "nope"]))


def test_resume_state_keeps_a_registered_name(test_l2, tmp_path):
    cfg = CompressConfig(teacher="t.pt", data="d", prune=PruneConfig(importance=NAME))
    d = cfg.to_dict()
    assert d["prune"]["importance"] == NAME
    json.dumps(d)  # serialisable: the name, not the function
    report = PruneReport(
        importance=NAME,
        target="params",
        target_ratio=0.4,
        params_before=10,
        params_after=6,
        macs_before=10,
        macs_after=6,
        flops_input_hw=[32, 32],
        widths=[],
        frozen=[],
    )
    save_state(tmp_path, d, report)
    assert load_state(tmp_path, cfg.to_dict()).importance == NAME
