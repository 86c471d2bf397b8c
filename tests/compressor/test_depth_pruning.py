"""Depth pruning (`--depth`): the block's Taylor value against a closed form, a removed block is
the identity, the knapsack trades a block for channels by importance per millisecond, the
record rebuilds the depth-pruned model, it exports, and every bad input is one line before any
pruning."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_pruning import make_batches, tiny_teacher
from torch import nn

from compressor import build_model, load_checkpoint, save_checkpoint
from compressor.checkpoint import default_preprocess
from compressor.losses import YolopLoss
from compressor.models.registry import get_spec
from compressor.models.reshape import remove_blocks
from compressor.pruning import PruneConfig, PruneConfigError, prune
from compressor.pruning.calibrate import calibrate
from compressor.pruning.graph import PruneGraph
from compressor.pruning.group import IN, OUT, ChannelGroup, LayerSlice
from compressor.pruning.importance import GroupScores, ImportanceContext, block_score
from compressor.pruning.latency_plan import BlockCandidate, LatencyPlanner, LatencyPricer
from compressor.pruning.record import check_record_matches
from runtime.latency_model.table import Anchor, LatencyTable, LayerInfo, ProbeTimes, TableKey

sys.path.insert(0, str(Path(__file__).parents[1] / "fakes"))
from toy_latency import toy_table  # noqa: E402

HW = (64, 128)
SPEC = get_spec("yolop")
BLOCKS = ("model.2.m", "model.4.m", "model.6.m")  # every removable block's layers
pytestmark = pytest.mark.usefixtures("one_thread")


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(4, 4, 1)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.c2(torch.relu(self.c1(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(x)


class _Toy(nn.Module):
    """stem -> residual block -> two linear 1x1 heads (tasks a and b)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.block = _Residual()
        self.head_a = nn.Conv2d(4, 1, 1)
        self.head_b = nn.Conv2d(4, 1, 1)

    def forward(self, x: torch.Tensor) -> dict:
        y = self.block(self.stem(x))
        return {"a": self.head_a(y), "b": self.head_b(y)}


def _toy_loss(out: dict, batch: object) -> dict:
    return {"a": (out["a"] ** 2).mean(), "b": out["b"].mean()}


def _hand_taylor(model: _Toy, x: torch.Tensor) -> tuple[float, float]:
    """dL_t/dy . f(x) in closed form: L_a = mean(a^2) with a = W_a y + b_a gives dL_a/dy =
    2 a W_a / N; L_b = mean(W_b y + b_b) gives W_b / N."""
    with torch.no_grad():
        h = model.stem(x)
        f = model.block.branch(h)
        y = h + f
        a = model.head_a(y)
        w_a, w_b = model.head_a.weight.view(1, 4, 1, 1), model.head_b.weight.view(1, 4, 1, 1)
        g_a = 2 * a * w_a / a.numel()
        g_b = w_b.expand_as(y) / a.numel()
        return float((g_a * f).sum()), float((g_b * f).sum())


def test_block_taylor_is_the_closed_form_first_order_change():
    torch.manual_seed(0)
    model = _Toy()
    batches = [torch.randn(2, 3, 8, 8) for _ in range(2)]
    stats = calibrate(
        model, _toy_loss, batches, {}, [], 2, conflict=True, progress=False,
        blocks={"block": model.block},
    )  # fmt: skip
    got = stats.block_taylor["block"]  # [T, B]
    assert got.shape == (2, 2)
    for b, x in enumerate(batches):
        want = _hand_taylor(model, x)
        assert float(got[0, b]) == pytest.approx(want[0], rel=1e-4)
        assert float(got[1, b]) == pytest.approx(want[1], rel=1e-4)
    assert all(p.grad is None for p in model.parameters())  # own buffers, as for channels
    gram = stats.block_gram["block"]
    assert gram.shape == (2, 2) and torch.allclose(gram, gram.T)


def test_block_score_is_in_the_units_of_its_inner_channels():
    """Per task: |Taylor| averaged over batches / the inner channels' mean importance; the
    aggregate (max) and the conflict penalty as for channels."""
    torch.manual_seed(0)
    model = _Toy()
    batches = [torch.randn(2, 3, 8, 8) for _ in range(2)]
    graph = PruneGraph(model, batches[0][:1], (), True)
    inner = [g for g in graph.groups if all(s.module.startswith("block.") for s in g.slices)]
    assert len(inner) == 1  # block.c1's outputs (= block.c2's inputs)
    keys = sorted({(s.module, s.kind) for g in graph.groups for s in g.slices})
    mods = graph.modules_in_groups()
    stats = calibrate(
        model, _toy_loss, batches, mods, keys, 2, progress=False, blocks={"block": model.block}
    )
    cfg = PruneConfig(ratio=0.3, target="latency", depth=True, group_rescale="none")
    sc = block_score(ImportanceContext(cfg, mods, stats), "block", inner)
    terms = inner[0].gather(lambda s: stats.taylor.get((s.module, s.kind)))  # [T, B, n]
    unit = terms.abs().mean(1).mean(-1)  # the inner channels' mean per-task importance
    per_task = stats.block_taylor["block"].abs().mean(1).float() / unit
    assert torch.allclose(sc.per_task, per_task, rtol=1e-5)
    c = sc.conflict
    assert c is not None and 0 <= float(c[0]) <= 1
    want = per_task.max() * (1 - cfg.conflict_lambda * c[0])
    assert float(sc.score[0]) == pytest.approx(float(want), rel=1e-5)


def test_a_removed_block_is_the_identity():
    model = tiny_teacher().eval()
    x = torch.randn(1, 3, *HW, generator=torch.Generator().manual_seed(1))
    zeroed = copy.deepcopy(model)
    branch = zeroed.get_submodule("model.4.m.0.cv2")
    branch.register_forward_hook(lambda _m, _i, out: torch.zeros_like(out))
    removed = remove_blocks(copy.deepcopy(model), ["model.4.m.0"])
    assert isinstance(removed.get_submodule("model.4.m.0"), nn.Identity)
    with torch.no_grad():
        a, b, full = zeroed(x), removed(x), model(x)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert not torch.equal(full["drivable"], b["drivable"])  # the block did something


def _planner_case(block_score_value: float, save_ms: float) -> LatencyPlanner:
    """Layer `a` (outside the block) and the block's `blk.c1` -> `blk.c2`, 16 channels each,
    every layer 1e-3 ms x c_in x c_out; group 0 = a's outputs, group 1 = the block's inner
    channels, every channel worth 1."""
    model = nn.Module()
    model.a = nn.Conv2d(16, 16, 1)
    model.blk = nn.Module()
    model.blk.c1, model.blk.c2 = nn.Conv2d(16, 16, 1), nn.Conv2d(16, 16, 1)
    grid = [1, 16]
    ms = np.array([[1e-3 * ci * co for co in grid] for ci in grid])
    names = ("a", "blk.c1", "blk.c2")
    layers = {n: LayerInfo(n, 16, 16, 1) for n in names}
    probes = {n: ProbeTimes(grid, grid, ms) for n in names}
    full = 1.0 + 3 * 0.256
    key = TableKey("toy", "Toy CPU", "fp32", (1, 1), 1, "toy")
    table = LatencyTable(key, layers, probes, [Anchor("full", full, {})])
    idx = torch.arange(16)
    groups = [
        ChannelGroup(0, "a", 16, [LayerSlice("a", OUT, idx, idx)]),
        ChannelGroup(
            1, "blk.c1", 16, [LayerSlice("blk.c1", OUT, idx, idx), LayerSlice("blk.c2", IN, idx, idx)]
        ),
    ]  # fmt: skip
    scores = {
        g.index: GroupScores(torch.ones(16), torch.zeros(16, dtype=torch.bool)) for g in groups
    }
    blocks = [BlockCandidate("blk", block_score_value, ["blk.c1", "blk.c2"], [1])]
    planner = LatencyPlanner(LatencyPricer(table, model, groups), groups, scores, 8, 8, 1.0, blocks)
    planner.run(full - save_ms)
    return planner


def test_the_knapsack_removes_a_block_when_it_costs_less_per_millisecond():
    # removing the block saves 0.512 ms for importance 1 (2 per ms); the cheapest channel step
    # (8 inner channels, 0.256 ms) costs 31 per ms: the block goes, the channels stay
    planner = _planner_case(1.0, 0.3)
    assert set(planner.removed_blocks) == {"blk"}
    assert planner.removed_blocks["blk"] == pytest.approx(0.512)
    assert [st.keep for st in planner.states] == [16, 16]
    assert planner.widths["blk.c1"] == [0, 0] and planner.predicted() == pytest.approx(1.256)
    assert planner.lost() == pytest.approx(1.0)
    # at importance 100 (195 per ms) the channel steps are cheaper: the block stays
    planner = _planner_case(100.0, 0.3)
    assert not planner.removed_blocks
    assert [st.keep for st in planner.states] == [8, 8] and planner.lost() == pytest.approx(16)
    # what the inner channels already cost is paid: with both groups at their floor the
    # block costs 100 - 8, and it is the only step left to reach 0.5 ms
    planner = _planner_case(100.0, 0.5)
    assert set(planner.removed_blocks) == {"blk"}
    assert planner.removed_blocks["blk"] == pytest.approx(0.256)
    assert planner.lost() == pytest.approx(8 + 100)  # a's 8 channels + the block in all


@pytest.fixture(scope="module")
def depth_pruned():
    teacher = tiny_teacher()
    table = toy_table(teacher, HW, heavy=BLOCKS, factor=30.0)
    student = copy.deepcopy(teacher)
    cfg = PruneConfig(ratio=0.3, target="latency", depth=True, calib_batches=2, flops_input_hw=HW)
    res = prune(
        student,
        YolopLoss.for_model(student),
        make_batches(),
        cfg,
        torch.zeros(1, 3, *HW),
        SPEC.protected,
        progress=False,
        latency_table=table,
        blocks=SPEC.removable_blocks,
    )
    return teacher, table, res


def test_depth_pruning_removes_blocks_and_reports_them(depth_pruned):
    teacher, table, res = depth_pruned
    removed = res.record["removed_blocks"]
    depth = res.report.depth
    assert removed and [r["block"] for r in depth["removed"]] == removed
    assert all(isinstance(res.model.get_submodule(b), nn.Identity) for b in removed)
    assert not any(r["safe"] for r in depth["removed"] if "safe" in r)
    assert all(set(r["per_task"]) == {"det", "drivable", "lane"} for r in depth["removed"])
    assert all(r["saved_ms"] > 0 and 0 <= r["conflict"] <= 1 for r in depth["removed"])
    assert len(removed) + len(depth["kept"]) == 3  # d0.33: one bottleneck per backbone CSP
    assert res.report.achieved_ratio >= 0.3 - 1e-9
    assert not any(n.startswith(tuple(b + "." for b in removed)) for n in res.record["layers"])
    md = res.report.to_markdown()
    assert "| removed block |" in md and f"`{removed[0]}`" in md
    # the table's prediction of the pruned model counts the removed layers as gone
    after = res.report.latency["predicted_after_ms"]
    assert after <= 0.7 * table.predict() * (1 + 1e-9)


def test_the_record_rebuilds_the_depth_pruned_model(depth_pruned, tmp_path):
    _, _, res = depth_pruned
    path = tmp_path / "student.pt"
    save_checkpoint(path, res.model, pruning=res.record, preprocess=default_preprocess(HW))
    loaded, ckpt = load_checkpoint(path)
    assert ckpt.pruning["removed_blocks"] == res.record["removed_blocks"]
    assert check_record_matches(loaded, ckpt.pruning["layers"]) == []
    res.model.eval()
    loaded.eval()
    x = torch.randn(2, 3, *HW)
    with torch.no_grad():
        a, b = res.model(x), loaded(x)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_a_depth_pruned_checkpoint_exports_to_onnx(depth_pruned, tmp_path):
    """Through export_model: it rebuilds the student from the record, and its own parity check
    (torch vs ONNX Runtime on inputs other than the tracing one) must pass."""
    import onnx

    from export import export_model
    from export.config import (
        ExportConfig,
        HalfOptions,
        InputOptions,
        OutputOptions,
        TensorRTOptions,
    )

    teacher, _, res = depth_pruned
    ckpt = tmp_path / "student.pt"
    save_checkpoint(ckpt, res.model, pruning=res.record, preprocess=default_preprocess(HW))
    cfg = ExportConfig(
        output=OutputOptions(dir=str(tmp_path / "out"), progress=False),
        input=InputOptions(max_batch=1),
        half=HalfOptions(enabled=False),
        tensorrt=TensorRTOptions(engine="none"),
    )
    out = export_model(ckpt, cfg)
    assert out.summary["parity"]["ok"] and out.summary["parity"]["cases"]
    graph = onnx.load(str(out.artifact("onnx"))).graph
    convs = sum(n.op_type == "Conv" for n in graph.node)
    teacher_convs = sum(isinstance(m, nn.Conv2d) for m in teacher.modules())
    assert convs == teacher_convs - 2 * len(res.record["removed_blocks"])  # cv1, cv2 per block


def test_depth_without_removable_blocks_or_latency_target_is_refused():
    model = build_model("twinlitenet")
    params = sum(p.numel() for p in model.parameters())
    cfg = PruneConfig(ratio=0.3, target="latency", depth=True, latency_table="unused.json")
    with pytest.raises(PruneConfigError, match="declares no removable blocks"):
        prune(model, None, [], cfg, torch.zeros(1, 3, 64, 128), progress=False, blocks=())
    assert sum(p.numel() for p in model.parameters()) == params
    with pytest.raises(PruneConfigError, match="needs target 'latency'"):
        PruneConfig(depth=True)
    with pytest.raises(PruneConfigError, match="needs gradients"):
        PruneConfig(target="latency", depth=True, importance="l1")


def test_cli_depth_on_a_model_without_blocks_is_one_line_before_pruning(
    tmp_path, synth_dataset, capsys
):
    from compressor.cli.compress import main as compress_main

    ckpt = tmp_path / "teacher.pt"
    save_checkpoint(ckpt, build_model("twinlitenet"), preprocess=default_preprocess(HW))
    out = tmp_path / "o"
    args = ["--teacher", str(ckpt), "--data", str(synth_dataset), "-o", str(out)]
    args += ["--target", "latency", "--depth", "--no-progress", "--workers", "0", "--batch", "2"]
    code = compress_main(args)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "'twinlitenet' declares no removable blocks" in err and "drop --depth" in err
    assert not (out / "student.pt").exists()


def test_iterative_depth_steps_compose_in_the_record(tmp_path):
    """A block removed in step 1 stays removed (priced at width 0) while step 2 re-traces the
    smaller model; the record of both steps rebuilds it."""
    teacher = tiny_teacher()
    table = toy_table(teacher, HW, heavy=BLOCKS, factor=30.0)
    student = copy.deepcopy(teacher)
    cfg = PruneConfig(
        ratio=0.4, target="latency", depth=True, calib_batches=2, flops_input_hw=HW,
        iterative_steps=2, safe_top_q=0.0,
    )  # fmt: skip
    res = prune(
        student, YolopLoss.for_model(student), make_batches(), cfg, torch.zeros(1, 3, *HW),
        SPEC.protected, progress=False, latency_table=table, blocks=SPEC.removable_blocks,
    )  # fmt: skip
    per_step = [st.blocks_removed for st in res.report.steps]
    assert per_step[0] >= 1 and sum(per_step) == len(res.record["removed_blocks"])
    path = tmp_path / "s.pt"
    save_checkpoint(path, student, pruning=res.record)
    loaded, _ = load_checkpoint(path)
    x = torch.randn(1, 3, *HW)
    with torch.no_grad():
        a, b = student.eval()(x), loaded.eval()(x)
    assert all(torch.equal(a[k], b[k]) for k in a)
