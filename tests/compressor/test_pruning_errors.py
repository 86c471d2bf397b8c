"""Bad pruning input fails with a named error that says what was wrong and how to fix it —
and before any calibration batch runs."""

from __future__ import annotations

import copy

import pytest
import torch

from compressor import build_model
from compressor.pruning import (
    CalibrationError,
    ImpossibleTargetError,
    ProtectedLayerError,
    PruneConfig,
    PruneConfigError,
    prune,
)
from runtime.errors import MtcError

HW = (64, 128)


class CountingLoss:
    """Per-task loss that records how often it ran (0 = no calibration work was done)."""

    def __init__(self):
        self.calls = 0

    def __call__(self, outputs, batch):
        self.calls += 1
        return {"drivable": outputs["drivable"].mean(), "lane": outputs["lane"].pow(2).mean()}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("yolop", width=0.25, depth=0.33)


def batches(n=2):
    return [{"images": torch.randn(1, 3, *HW)} for _ in range(n)]


def cfg(**kw):
    return PruneConfig(**{"calib_batches": 2, "flops_input_hw": HW, **kw})


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.1, 1.5])
def test_ratio_outside_open_interval(ratio):
    with pytest.raises(PruneConfigError, match=r"ratio must be in \(0, 1\).*got"):
        PruneConfig(ratio=ratio)


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"importance": "tcii"}, "did you mean 'tci'"),
        ({"normalize": "median"}, "normalize 'median' is not one of mean, max, l2"),
        ({"aggregate": "weighted"}, "needs task_weights"),
        ({"round_to": 0}, "round_to must be >= 1"),
        ({"safe_top_q": 1.0}, r"safe_top_q must be in \[0, 1\)"),
        ({"target": "speed"}, "target 'speed' is not one of params, flops, latency"),
    ],
)
def test_bad_config_values(kw, match):
    with pytest.raises(PruneConfigError, match=match):
        PruneConfig(**kw)


def test_former_alias_tci_plus_gcp_is_an_unknown_name():
    with pytest.raises(PruneConfigError, match="'tci\\+gcp' is not registered.*did you mean"):
        PruneConfig(importance="tci+gcp")


def test_unknown_protected_layer_lists_close_names_before_any_work(model):
    loss = CountingLoss()
    with pytest.raises(ProtectedLayerError, match="model.24.m.9.*close names: model.24.m"):
        prune(copy.deepcopy(model), loss, batches(), cfg(), protected=("model.24.m.9",))
    assert loss.calls == 0


def test_unreachable_target_states_the_maximum_before_any_work(model):
    loss = CountingLoss()
    m = copy.deepcopy(model)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(ImpossibleTargetError, match=r"cannot remove 95.0% of params.*at most") as e:
        prune(m, loss, batches(), cfg(ratio=0.95, min_width=16))
    assert loss.calls == 0
    assert all(torch.equal(v, before[k]) for k, v in m.state_dict().items())  # untouched
    best = float(str(e.value).split("at most ")[1].split("%")[0])
    assert 30 < best < 95


def test_safe_rule_that_blocks_the_target_is_explained(model):
    with pytest.raises(ImpossibleTargetError, match="safe rule"):
        prune(
            copy.deepcopy(model),
            CountingLoss(),
            batches(),
            cfg(importance="tci", ratio=0.7, safe_top_q=0.9, min_width=1, round_to=1),
        )


def test_loss_must_return_a_dict_of_scalars(model):
    with pytest.raises(CalibrationError, match="expected a non-empty dict"):
        prune(copy.deepcopy(model), lambda o, b: o["lane"].mean(), batches(), cfg())
    with pytest.raises(CalibrationError, match="expected a scalar tensor"):
        prune(copy.deepcopy(model), lambda o, b: {"lane": o["lane"]}, batches(), cfg())


def test_batches_must_carry_images(model):
    with pytest.raises(CalibrationError, match="without an 'images' key"):
        prune(copy.deepcopy(model), CountingLoss(), [{"img": torch.zeros(1, 3, *HW)}], cfg())
    with pytest.raises(CalibrationError, match="no calibration batches"):
        prune(copy.deepcopy(model), CountingLoss(), [], cfg())


def test_gradient_importance_needs_a_loss(model):
    with pytest.raises(CalibrationError, match="needs a per-task loss_fn"):
        prune(copy.deepcopy(model), None, batches(), cfg(importance="tci"))


def test_all_are_user_errors():
    for cls in (PruneConfigError, ProtectedLayerError, ImpossibleTargetError, CalibrationError):
        assert issubclass(cls, MtcError)
