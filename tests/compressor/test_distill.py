"""Head-agnostic feature distillation: taps by name, adapters outside the student, frozen teacher
outside the module tree, feature losses, no head outputs distilled, clear tap errors, and a run
through compressor.train.train."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from compressor import build_model, load_checkpoint
from compressor.distill import (
    DistillConfig,
    DistillConfigError,
    DistillExtension,
    TapError,
    TapMismatchError,
    build_feature_loss,
    distill,
)
from compressor.distill.adapters import adapter_key
from compressor.models import FeatureInfo
from compressor.pruning import PruneConfig, prune

HW = (64, 128)
X = torch.randn(2, 3, *HW, generator=torch.Generator().manual_seed(0))


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: torch on one thread


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    teacher = build_model("yolop", width=0.25, depth=0.33)
    student = copy.deepcopy(teacher)
    prune(student, None, [X], PruneConfig(importance="l1", flops_input_hw=HW), progress=False)
    return teacher, student


def test_taps_and_adapters_come_from_feature_info(pair):
    teacher, student = pair
    ext = DistillExtension(copy.deepcopy(teacher), student, example_inputs=X[:1])
    names = [f.name for f in teacher.feature_info]
    assert ext.tap_names == names
    by_s = {f.name: f for f in student.feature_info}
    for t in ext.teacher_taps:
        a = ext.adapters[adapter_key(t.name)]
        assert a.conv.in_channels == by_s[t.name].channels  # measured = declared (pruned)
        assert a.conv.out_channels == t.channels
    assert any(by_s[n].channels < t.channels for n, t in zip(names, ext.teacher_taps))
    assert {t.stride for t in ext.student_taps} == {8, 16, 32}


def test_teacher_is_frozen_and_out_of_the_module_tree(pair):
    teacher, student = pair
    t = copy.deepcopy(teacher).train()
    ext = DistillExtension(t, student, example_inputs=X[:1])
    assert not t.training and not any(p.requires_grad for p in t.parameters())
    ext_params = {id(p) for p in ext.parameters()}
    assert not ext_params & {id(p) for p in t.parameters()}
    assert all(k.startswith("adapters") for k in ext.state_dict())  # adapters + fitted flag


def test_kd_is_zero_for_identical_features_and_positive_otherwise(pair):
    teacher, student = pair
    same = copy.deepcopy(teacher)
    cfg = DistillConfig(adapter_init="random")
    ext = DistillExtension(copy.deepcopy(teacher), same, cfg, example_inputs=X[:1])
    for a in ext.adapters.values():  # identity adapters; BN in eval with fresh stats
        nn.init.dirac_(a.conv.weight)
    ext.eval()
    same.eval()  # BN on running stats, like the teacher
    ext.attach(same)
    with torch.no_grad():
        kd = ext(X, same(X))["kd"]
    ext.detach()
    assert float(kd) == pytest.approx(0.0, abs=1e-4)
    ext2 = DistillExtension(copy.deepcopy(teacher), student, cfg, example_inputs=X[:1])
    ext2.attach(student)
    with torch.no_grad():
        assert float(ext2(X, student(X))["kd"]) > 0.1
    ext2.detach()


def _first_kd(teacher, student, init):
    s = copy.deepcopy(student).eval()
    ext = DistillExtension(copy.deepcopy(teacher), s, DistillConfig(adapter_init=init), X[:1])
    ext.attach(s)
    with torch.no_grad():
        kd = float(ext(X, s(X))["kd"])
    ext.detach()
    return kd, ext


def test_least_squares_adapter_init_starts_kd_at_the_real_gap(pair):
    teacher, student = pair
    kd_self, ext = _first_kd(teacher, teacher, "lstsq")
    assert kd_self < 0.05  # student == teacher: the fitted map is ~identity
    assert bool(ext.state_dict()["adapters_fitted"])  # saved, so resume does not refit
    kd_fit, _ = _first_kd(teacher, student, "lstsq")
    kd_rand, _ = _first_kd(teacher, student, "random")
    assert kd_fit < 0.5 * kd_rand


def test_kd_gradient_reaches_taps_but_never_heads(pair):
    teacher, student = pair
    s = copy.deepcopy(student).train()
    ext = DistillExtension(
        copy.deepcopy(teacher), s, DistillConfig(kd_weight=2.0), example_inputs=X[:1]
    )
    ext.attach(s)
    ext(X, s(X))["kd"].backward()
    ext.detach()
    assert s.model[0].conv.conv.weight.grad.abs().sum() > 0  # backbone learns from KD
    assert all(a.conv.weight.grad is not None for a in ext.adapters.values())
    for head in ("model.24", "model.33", "model.42", "model.41"):  # heads: no KD signal
        for p in s.get_submodule(head).parameters():
            assert p.grad is None or float(p.grad.abs().sum()) == 0.0, head


def test_attach_refuses_a_different_student(pair):
    teacher, student = pair
    ext = DistillExtension(copy.deepcopy(teacher), student, example_inputs=X[:1])
    with pytest.raises(TapMismatchError, match="adapters were built for"):
        ext.attach(copy.deepcopy(teacher))


def test_unknown_tap_lists_the_valid_ones(pair):
    teacher, student = pair
    with pytest.raises(TapError, match=r"'neck_s4' does not exist.*valid taps: backbone_s8"):
        DistillExtension(teacher, student, DistillConfig(taps=("neck_s4",)), X[:1])


class Strided(nn.Module):
    def __init__(self, stride: int, tap: str = "feat"):
        super().__init__()
        self.feat = nn.Conv2d(3, 8, 3, stride, 1)
        self.head = nn.Conv2d(8, 2, 1)
        self.feature_info = [FeatureInfo(tap, "feat", 8, stride)]

    def forward(self, x):
        return {"seg": self.head(self.feat(x))}


def test_pairs_whose_taps_do_not_line_up_are_refused():
    with pytest.raises(TapMismatchError, match="feat: teacher stride 2 16x16, student stride 4"):
        DistillExtension(Strided(2), Strided(4), example_inputs=torch.zeros(1, 3, 32, 32))
    with pytest.raises(TapMismatchError, match="names differ"):
        DistillExtension(Strided(2, "a"), Strided(2, "b"), example_inputs=torch.zeros(1, 3, 32, 32))


def test_feature_losses():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(2, 4, 6, 6, generator=g), torch.randn(2, 4, 6, 6, generator=g)
    mse = build_feature_loss("mse", normalize=True)
    scale = torch.tensor([1.0, 10.0, 0.5, 3.0]).view(1, 4, 1, 1)
    assert float(mse(s, t * scale + 5)) == pytest.approx(float(mse(s, t)), rel=1e-3)
    assert float(mse(t, t * scale + 5)) == pytest.approx(0.0, abs=1e-4)  # per-channel invariant
    raw = build_feature_loss("mse", normalize=False)
    assert float(raw(t, t * scale)) > 1.0
    cos = build_feature_loss("cosine")
    assert float(cos(t, 3 * t)) == pytest.approx(0.0, abs=1e-5)
    assert float(cos(t, -t)) == pytest.approx(2.0, abs=1e-5)
    att = build_feature_loss("attention")
    assert float(att(t, 7 * t)) == pytest.approx(0.0, abs=1e-6)
    assert float(att(s, t)) > 0


def test_config_validation():
    with pytest.raises(DistillConfigError, match="did you mean 'cosine'"):
        DistillConfig(loss="cosin")
    with pytest.raises(DistillConfigError, match="kd_weight must be >= 0"):
        DistillConfig(kd_weight=-1)
    with pytest.raises(DistillConfigError, match="exactly one of"):
        distill(nn.Identity(), nn.Identity(), None, DistillConfig())


def test_distill_through_the_training_loop(pair, synth_dataset, tmp_path):
    from compressor.train import TrainConfig

    teacher, student = pair
    s = copy.deepcopy(student)
    keys = set(s.state_dict())
    tcfg = TrainConfig(
        data=str(synth_dataset),
        out=str(tmp_path / "kd"),
        imgsz=HW,
        epochs=1,
        batch=2,
        workers=0,
        progress=False,
        max_train_images=4,
        max_val_images=2,
        eval_every=0,
    )
    res = distill(
        copy.deepcopy(teacher),
        s,
        None,
        DistillConfig(taps=("neck_s8", "neck_s16")),
        train_cfg=tcfg,
        init_checkpoint_fields={"pruning": {"layers": {}}},
    )
    hist = res.train_result.history
    assert hist and "kd" in hist[-1]["train"] and hist[-1]["train"]["kd"] > 0
    assert set(res.student.state_dict()) == keys
    loaded, ckpt = load_checkpoint(res.train_result.last)
    assert set(loaded.state_dict()) == keys  # no adapter in the saved model
    assert loaded.model[17].cv4.conv.out_channels == s.model[17].cv4.conv.out_channels
    assert ckpt.pruning == {"layers": {}}
    assert any("adapters" in k for k in _flatten_keys(ckpt.train_state))  # resumable


def _flatten_keys(obj, prefix=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield f"{prefix}{k}"
            yield from _flatten_keys(v, f"{prefix}{k}.")


def test_generic_namespace_without_feature_info_needs_names():
    m = nn.Sequential(nn.Conv2d(3, 4, 3))
    m.feature_info = []
    with pytest.raises(TapError, match="declares no feature_info"):
        DistillExtension(m, copy.deepcopy(m), example_inputs=torch.zeros(1, 3, 8, 8))
