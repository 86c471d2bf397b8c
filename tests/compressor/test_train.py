"""Training loop: learning, exact resume (epoch and mid-epoch), NaN stop, extension contract."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from compressor import load_checkpoint
from compressor.losses import YolopLoss
from compressor.train import NonFiniteLossError, TrainConfig, TrainExtension, train

TINY = {"width": 0.25, "depth": 0.33, "imgsz": (64, 128), "workers": 0, "progress": False}


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: torch on one thread


def _cfg(data, out, **kw) -> TrainConfig:
    base = dict(
        TINY,
        data=str(data),
        out=str(out),
        batch=2,
        epochs=2,
        max_train_images=6,
        max_val_images=2,
        eval_every=0,
    )
    base.update(kw)
    return TrainConfig(**base)


class CountingLoss:
    """YolopLoss that can interrupt (Ctrl-C) or poison (NaN) a given call, to simulate failures."""

    def __init__(self, model_like, stop_at=None, nan_at=None, nan_task="lane"):
        self.inner = YolopLoss.for_model(model_like)
        self.calls, self.stop_at, self.nan_at, self.nan_task = 0, stop_at, nan_at, nan_task

    @property
    def components(self):
        return self.inner.components

    def __call__(self, outputs, batch):
        self.calls += 1
        if self.calls == self.stop_at:
            raise KeyboardInterrupt
        losses = self.inner(outputs, batch)
        if self.calls == self.nan_at:
            losses[self.nan_task] = losses[self.nan_task] * float("nan")
        return losses


def _weights(path):
    _, ckpt = load_checkpoint(path)
    return ckpt.state_dict, ckpt.train_state


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].numel())


def test_each_task_loss_falls_over_30_steps(synth_dataset, tmp_path):
    # 3 images in one batch, so every step sees the same data: each task's loss must fall
    # (128x256: at 64x128 the synthetic vehicles are a few pixels and detection barely starts)
    cfg = _cfg(
        synth_dataset,
        tmp_path,
        imgsz=(128, 256),
        batch=3,
        max_train_images=3,
        epochs=30,
        augment=False,
        lr=0.01,
        warmup_epochs=3,
        ema=False,
    )
    result = train(cfg)
    assert result.steps == 30 and len(result.history) == 30
    for task in ("det", "drivable", "lane"):
        curve = [h["train"][task] for h in result.history]
        first, last = sum(curve[:3]) / 3, sum(curve[-3:]) / 3
        assert last < 0.9 * first, f"{task} loss did not fall: {first:.4f} -> {last:.4f}"
    assert (tmp_path / "metrics.json").is_file() and (tmp_path / "metrics.md").is_file()


@pytest.fixture(scope="module")
def uninterrupted(synth_dataset, tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("full")
    train(_cfg(synth_dataset, out))
    return _weights(out / "last.pt")


def test_resume_after_an_epoch_equals_uninterrupted(synth_dataset, tmp_path, uninterrupted):
    cfg = _cfg(synth_dataset, tmp_path)
    first = train(dataclasses.replace(cfg, stop_after_epochs=1))
    assert first.epochs_done == 1 and first.steps == 3
    train(dataclasses.replace(cfg, resume=str(tmp_path / "last.pt")))
    sd, state = _weights(tmp_path / "last.pt")
    ref_sd, ref_state = uninterrupted
    assert _max_diff(sd, ref_sd) < 1e-6  # EMA weights (what the checkpoint ships)
    assert _max_diff(state["raw_model"], ref_state["raw_model"]) < 1e-6
    assert state["progress"]["step"] == ref_state["progress"]["step"] == 6
    assert len(state["progress"]["history"]) == 2


def test_resume_mid_epoch_equals_uninterrupted(synth_dataset, tmp_path, uninterrupted):
    cfg = _cfg(synth_dataset, tmp_path, save_every=1)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, loss_fn=CountingLoss(_anchor_model(), stop_at=5))  # dies in epoch 2, batch 2
    _, state = _weights(tmp_path / "last.pt")
    assert (state["progress"]["epoch"], state["progress"]["epoch_step"]) == (1, 1)
    train(dataclasses.replace(cfg, resume=str(tmp_path / "last.pt")))
    sd, state = _weights(tmp_path / "last.pt")
    assert _max_diff(sd, uninterrupted[0]) < 1e-6
    assert _max_diff(state["raw_model"], uninterrupted[1]["raw_model"]) < 1e-6


def _anchor_model():
    from compressor import build_model

    return build_model("yolop", width=0.25, depth=0.33)


def test_nan_loss_stops_naming_step_and_task_and_keeps_last_checkpoint(synth_dataset, tmp_path):
    cfg = _cfg(synth_dataset, tmp_path, save_every=1)
    with pytest.raises(NonFiniteLossError, match=r"step 3 .*lane=nan.*last good checkpoint"):
        train(cfg, loss_fn=CountingLoss(_anchor_model(), nan_at=3))
    model, ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt.train_state["progress"]["step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt.state_dict.values() if v.is_floating_point())


class ShiftExtension(TrainExtension):
    """A stand-in for distillation: one trainable parameter and one extra loss term."""

    def __init__(self) -> None:
        super().__init__()
        self.target = nn.Parameter(torch.zeros(3))
        self.attached: list = []
        self.detached = 0

    def attach(self, model: nn.Module) -> None:
        self.attached.append(model)

    def detach(self) -> None:
        self.detached += 1

    def forward(self, images, outputs):
        assert set(outputs) == {"det", "drivable", "lane"}
        return {"kd": ((self.target - 1.0) ** 2).sum()}


def test_extension_is_attached_optimised_saved_in_train_state_and_detached(synth_dataset, tmp_path):
    ext = ShiftExtension()
    model = _anchor_model()
    pruning = {"method": "test", "layers": {"model.0.conv.conv": [0, 1, 2]}}
    result = train(
        _cfg(synth_dataset, tmp_path, epochs=1, lr=0.05, warmup_epochs=0),
        model=model,
        extension=ext,
        init_checkpoint_fields={"pruning": pruning},
    )
    assert len(ext.attached) == 1 and ext.attached[0] is model and ext.detached == 1
    assert result.model is model
    assert (ext.target.detach() > 0).all()  # moved toward 1 by the optimiser
    _, ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt.pruning == pruning
    assert not any("target" in k for k in ckpt.state_dict)
    assert torch.equal(ckpt.train_state["extension"]["target"], ext.target.detach())
    # resume restores the extension's own state
    fresh = ShiftExtension()
    train(
        _cfg(
            synth_dataset,
            tmp_path,
            epochs=1,
            lr=0.05,
            warmup_epochs=0,
            resume=str(tmp_path / "last.pt"),
        ),
        extension=fresh,
    )
    assert torch.equal(fresh.target.detach(), ext.target.detach())  # nothing left to train


class DtypeRecordingLoss(CountingLoss):
    """Records the dtype of every floating output the loss receives."""

    def __init__(self, model_like):
        super().__init__(model_like)
        self.dtypes: set[torch.dtype] = set()

    def __call__(self, outputs, batch):
        stack = [outputs]
        while stack:
            o = stack.pop()
            if torch.is_tensor(o):
                self.dtypes.add(o.dtype)
            elif isinstance(o, dict):
                stack.extend(o.values())
            elif isinstance(o, (list, tuple)):
                stack.extend(o)
        return super().__call__(outputs, batch)


@pytest.mark.parametrize("cpu_bf16", [False, True])
def test_cpu_bf16_runs_the_network_in_bfloat16_and_the_losses_in_float32(
    synth_dataset, tmp_path, cpu_bf16
):
    model = _anchor_model()
    conv_dtypes: set[torch.dtype] = set()

    def record(module, inputs, output):  # training forwards only (validation runs in float32)
        if module.training:
            conv_dtypes.add(output.dtype)

    model.model[0].register_forward_hook(record)
    loss = DtypeRecordingLoss(model)
    result = train(
        _cfg(synth_dataset, tmp_path, epochs=1, device="cpu", cpu_bf16=cpu_bf16),
        model=model,
        loss_fn=loss,
    )
    assert conv_dtypes == ({torch.bfloat16} if cpu_bf16 else {torch.float32})
    assert loss.dtypes == {torch.float32}  # never bf16 into the loss
    assert all(p.dtype == torch.float32 for p in result.model.parameters())  # master weights
    assert torch.isfinite(torch.tensor(result.history[-1]["train"]["total"]))
