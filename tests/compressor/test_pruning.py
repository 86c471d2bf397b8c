"""Task-aware pruning of the built-in YOLOP (tiny: width 0.25, depth 0.33, 64x128): a real smaller
network, exact targets, round_to widths, protected heads, record -> checkpoint -> identical
rebuild, ONNX parity, calibration side effects, safe rule, iterative steps."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from compressor import build_model, load_checkpoint, save_checkpoint
from compressor.flops import count_cost, count_params
from compressor.losses import YolopLoss
from compressor.pruning import PruneConfig, group_scores, prune
from compressor.pruning.record import check_record_matches

HW = (64, 128)
HEADS = ("model.24.m.0", "model.24.m.1", "model.24.m.2", "model.33.conv", "model.42.conv")


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: torch on one thread


def make_batches(n: int = 2, bs: int = 2, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        boxes = []
        for i in range(bs):
            for _ in range(3):
                cx, cy = 16 + 96 * torch.rand(1, generator=g), 8 + 48 * torch.rand(1, generator=g)
                w, h = 6 + 20 * torch.rand(1, generator=g), 6 + 20 * torch.rand(1, generator=g)
                boxes.append([float(i), 0.0, float(cx), float(cy), float(w), float(h)])
        out.append(
            {
                "images": torch.randn(bs, 3, *HW, generator=g),
                "targets": torch.tensor(boxes),
                "drivable": (torch.rand(bs, *HW, generator=g) > 0.5).long(),
                "lane": (torch.rand(bs, *HW, generator=g) > 0.9).long(),
            }
        )
    return out


def tiny_teacher(seed: int = 0):
    torch.manual_seed(seed)
    return build_model("yolop", width=0.25, depth=0.33)


def cfg(**kw) -> PruneConfig:
    return PruneConfig(**{"calib_batches": 2, "flops_input_hw": HW, **kw})


@pytest.fixture(scope="module")
def batches():
    return make_batches()


@pytest.fixture(scope="module")
def pruned(batches):
    teacher = tiny_teacher()
    student = copy.deepcopy(teacher)
    result = prune(student, YolopLoss.for_model(teacher), batches, cfg(), progress=False)
    return teacher, result


def test_pruning_gives_a_real_smaller_network_at_the_target(pruned):
    teacher, res = pruned
    rep = res.report
    assert res.model is not teacher
    assert rep.params_before == count_params(teacher)
    assert rep.params_after == count_params(res.model)  # measured, not estimated
    assert rep.steps[-1].predicted_params == rep.params_after  # exact cost model
    assert 0.40 <= rep.params_ratio < 0.45  # target met, not wildly overshot
    assert count_cost(res.model, HW).macs == rep.macs_after < rep.macs_before
    assert res.record["achieved_ratio"] == pytest.approx(rep.params_ratio, abs=1e-6)


def test_every_pruned_width_is_a_multiple_of_round_to(pruned):
    teacher, res = pruned
    changed = res.record["layers"]
    assert len(changed) > 10
    before = dict(teacher.named_modules())
    for name, m in res.model.named_modules():
        if isinstance(m, torch.nn.Conv2d) and m.out_channels != before[name].out_channels:
            assert m.out_channels % 8 == 0 and m.out_channels >= 8, name
            assert changed[name]["out"] == [before[name].out_channels, m.out_channels]


def test_prediction_heads_are_protected(pruned):
    teacher, res = pruned
    mods, tmods = dict(res.model.named_modules()), dict(teacher.named_modules())
    for name in HEADS:
        assert mods[name].out_channels == tmods[name].out_channels
    assert res.model.detect.m[0].in_channels < teacher.detect.m[0].in_channels  # inputs may shrink
    frozen = {f["root"] for f in res.report.frozen}
    assert set(HEADS) <= frozen


def test_outputs_keep_their_shapes_in_train_and_eval(pruned):
    teacher, res = pruned
    x = torch.randn(2, 3, *HW)
    for mode in (True, False):
        teacher.train(mode)
        res.model.train(mode)
        a, b = teacher(x), res.model(x)
        for k in ("drivable", "lane"):
            assert a[k].shape == b[k].shape
        det_a = a["det"] if not mode else a["det"][0]
        det_b = b["det"] if not mode else b["det"][0]
        assert det_a.shape == det_b.shape


def test_record_lists_kept_original_indices(pruned):
    teacher, res = pruned
    layers = res.record["layers"]
    assert check_record_matches(res.model, layers) == []
    tmods = dict(teacher.named_modules())
    for name, rec in layers.items():
        if rec["kept_out"] is not None:
            kept = rec["kept_out"]
            assert kept == sorted(set(kept)) and len(kept) == rec["out"][1]
            assert kept[0] >= 0 and kept[-1] < rec["out"][0]
        if rec["type"] == "Conv2d" and rec["kept_out"] is not None:
            # the surviving filters are exactly the teacher's filters at the kept indices
            w_t = tmods[name].weight[rec["kept_out"]]
            if rec["kept_in"] is not None:
                w_t = w_t[:, rec["kept_in"]]
            assert torch.equal(dict(res.model.named_modules())[name].weight, w_t)


def test_checkpoint_rebuilds_the_pruned_architecture(pruned, tmp_path):
    _, res = pruned
    path = tmp_path / "student.pt"
    save_checkpoint(path, res.model, pruning=res.record)
    loaded, ckpt = load_checkpoint(path)
    assert ckpt.pruning["layers"] == res.record["layers"]
    res.model.eval()
    loaded.eval()
    x = torch.randn(2, 3, *HW)
    a, b = res.model(x), loaded(x)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_onnx_export_matches_torch(pruned, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    _, res = pruned
    model = copy.deepcopy(res.model).eval()
    path = tmp_path / "student.onnx"
    torch.onnx.export(
        model,
        (torch.zeros(1, 3, *HW),),
        str(path),
        opset_version=17,
        dynamo=False,
        input_names=["images"],
        output_names=["det", "drivable", "lane"],
    )
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(1, 3, *HW, generator=torch.Generator().manual_seed(5))  # not the trace input
    got = sess.run(None, {"images": x.numpy()})
    with torch.no_grad():
        ref = model(x)
    for out, key in zip(got, ("det", "drivable", "lane")):
        np.testing.assert_allclose(out, ref[key].numpy(), rtol=1e-3, atol=1e-4)


def test_calibration_uses_own_buffers_and_frozen_bn(batches):
    model = tiny_teacher().train()
    stats = {k: v.clone() for k, v in model.state_dict().items()}
    group_scores(model, YolopLoss.for_model(model), batches, cfg())
    assert all(p.grad is None for p in model.parameters())  # autograd.grad, not .backward
    assert model.training and model.model[4].bn.training  # modes restored
    for k, v in model.state_dict().items():
        assert torch.equal(v, stats[k]), k  # BN statistics untouched (BN was in eval)


def test_safe_channels_are_never_pruned(batches):
    teacher = tiny_teacher()
    c = cfg(importance="tci", safe_top_q=0.25, ratio=0.5)
    loss = YolopLoss.for_model(teacher)
    groups, scores = group_scores(copy.deepcopy(teacher), loss, batches, c)
    res = prune(copy.deepcopy(teacher), loss, batches, c, progress=False)
    checked = 0
    for g in groups:
        rec = res.record["layers"].get(g.root)
        safe = set(scores[g.index].safe.nonzero().view(-1).tolist())
        assert safe  # every group served by a task protects something
        if rec is not None and rec["kept_out"] is not None:
            assert safe <= set(rec["kept_out"]), g.root
            checked += 1
    assert checked >= 5


def test_flops_target_is_met(batches):
    teacher = tiny_teacher()
    res = prune(
        teacher, None, batches, cfg(importance="l1", target="flops", ratio=0.3), progress=False
    )
    assert res.report.flops_ratio >= 0.3
    assert res.report.achieved_ratio == res.report.flops_ratio


def test_iterative_steps_fine_tune_between_steps(batches):
    model = tiny_teacher()
    calls = []
    res = prune(
        model,
        None,
        batches,
        cfg(importance="l1", iterative_steps=2),
        finetune=lambda m, step: calls.append((m, step)),
        progress=False,
    )
    assert calls == [(model, 1)]  # between steps only, with the model being pruned
    assert [s.target_ratio for s in res.report.steps] == [0.2, 0.4]
    assert res.report.steps[0].params > res.report.steps[1].params
    assert res.report.params_ratio >= 0.4
    assert check_record_matches(model, res.record["layers"]) == []


@pytest.mark.parametrize("importance", ["random", "l1", "taylor_sum", "tci"])
def test_each_importance_meets_the_ratio_deterministically(batches, importance):
    loss = YolopLoss.for_model(tiny_teacher())
    c = cfg(importance=importance, calib_batches=1)
    a = prune(tiny_teacher(), loss, batches, c, progress=False)
    assert a.report.params_ratio >= 0.4
    if importance in ("random", "tci"):
        b = prune(tiny_teacher(), loss, batches, c, progress=False)
        assert a.record["layers"] == b.record["layers"]


def test_importances_choose_different_channels(batches):
    loss = YolopLoss.for_model(tiny_teacher())
    recs = {
        imp: prune(
            tiny_teacher(), loss, batches, cfg(importance=imp, calib_batches=1), progress=False
        ).record["layers"]
        for imp in ("random", "l1")
    }
    assert recs["random"] != recs["l1"]


def test_report_markdown_and_plot(pruned, tmp_path):
    _, res = pruned
    md = res.report.to_markdown()
    assert "tci_gcp" in md and "parameters" in md and "model.24.m.0" in md
    png = res.report.plot_widths(tmp_path / "w.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    d = res.report.to_dict()
    assert d["flops_before"] == 2 * d["macs_before"]
    assert len(d["widths"]) == sum(isinstance(m, torch.nn.Conv2d) for m in res.model.modules())


@pytest.mark.slow
def test_full_size_yolop_prunes_to_target_and_rebuilds(tmp_path):
    torch.manual_seed(0)
    teacher = build_model("yolop")
    hw = (384, 640)
    g = torch.Generator().manual_seed(0)
    batches = [
        {
            "images": torch.randn(1, 3, *hw, generator=g),
            "targets": torch.tensor([[0.0, 0.0, 320.0, 200.0, 40.0, 30.0]]),
            "drivable": (torch.rand(1, *hw, generator=g) > 0.5).long(),
            "lane": (torch.rand(1, *hw, generator=g) > 0.9).long(),
        }
        for _ in range(2)
    ]
    student = copy.deepcopy(teacher)
    res = prune(
        student, YolopLoss.for_model(teacher), batches, PruneConfig(calib_batches=2), progress=False
    )
    assert res.report.params_ratio >= 0.4 and res.report.flops_input_hw == [384, 640]
    for name, rec in res.record["layers"].items():
        if rec["type"] == "Conv2d" and rec["out"][0] != rec["out"][1]:
            assert rec["out"][1] % 8 == 0, name
    path = tmp_path / "s.pt"
    save_checkpoint(path, student, pruning=res.record)
    loaded, _ = load_checkpoint(path)
    student.eval()
    loaded.eval()
    x = torch.randn(1, 3, *hw)
    assert torch.equal(student(x)["lane"], loaded(x)["lane"])
