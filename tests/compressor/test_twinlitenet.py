"""The built-in TwinLiteNet: the official state dict layout (strict load, with and without
DataParallel's prefix), the spec (stride 8, plain-resize [0, 1] preprocessing, output contract),
feature taps against a real forward, the focal + Tversky loss on synthetic data, and pruning
(attention frozen, ESP concat coupling followed, taps follow the pruned widths)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from compressor import build_model, load_checkpoint, save_checkpoint
from compressor.data.bdd import BddDataset, collate
from compressor.data.config import DataConfig
from compressor.flops import count_params
from compressor.losses import TWINLITE_LOSS, SegmentationLoss, total_loss
from compressor.models.registry import get_spec, import_official
from compressor.models.spec import ModelSpecError
from compressor.models.twinlitenet import _import_official
from compressor.pruning import PruneConfig, prune
from compressor.pruning.graph import PruneGraph

DATA = Path(__file__).resolve().parents[1] / "data"
OFFICIAL_PARAMS = 439_633
HW = (96, 160)  # a small size the stride rule allows (encoder at 12x20)

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: torch on one thread


def shapes(name: str) -> dict[str, list[int]]:
    return json.loads((DATA / f"{name}_state_dict_shapes.json").read_text())


def random_state_dict(name: str, prefix: str = "") -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    sd = {}
    for k, shape in shapes(name).items():
        if k.endswith("num_batches_tracked"):
            sd[prefix + k] = torch.tensor(7)
        else:
            sd[prefix + k] = torch.rand(shape, generator=g) + 0.5  # running_var stays > 0
    return sd


def seg_batches(n: int = 2, bs: int = 2, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.rand(bs, 3, *HW, generator=g)
        out.append(
            {
                "images": x,
                "drivable": (x[:, 0] > 0.5).long(),  # learnable from the input
                "lane": (x[:, 1] > 0.9).long(),
            }
        )
    return out


@pytest.fixture(scope="module")
def spec():
    return get_spec("twinlitenet")


@pytest.fixture(scope="module")
def pruned():
    torch.manual_seed(0)
    teacher = build_model("twinlitenet")
    student = copy.deepcopy(teacher)
    cfg = PruneConfig(ratio=0.2, importance="tci_gcp", calib_batches=2, flops_input_hw=HW)
    res = prune(student, get_spec("twinlitenet").loss(student), seg_batches(), cfg, progress=False)
    return teacher, student, res


# -- official layout -------------------------------------------------------------------------
def test_state_dict_is_the_official_layout():
    model = build_model("twinlitenet")
    want = shapes("twinlitenet")
    got = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert got == want
    assert len(got) == 183
    assert count_params(model) == sum(p.numel() for p in model.parameters()) == OFFICIAL_PARAMS


@pytest.mark.parametrize("prefix", ["", "module."])
def test_official_checkpoint_is_recognised_and_loads_strictly(prefix):
    sd = random_state_dict("twinlitenet", prefix)
    got = import_official(sd)
    assert got is not None
    name, config, clean = got
    assert name == "twinlitenet" and config == {"p": 2, "q": 3}
    assert not any(k.startswith("module.") for k in clean)
    model = build_model(name, **config)
    model.load_state_dict(clean, strict=True)
    key = "encoder.sa.query_conv.weight"
    assert torch.equal(model.state_dict()[key], sd[prefix + key])


def test_other_checkpoints_are_not_twinlitenet():
    yolop_sd = random_state_dict("yolop")
    assert _import_official(yolop_sd) is None
    assert import_official(yolop_sd)[0] == "yolop"
    # an ESPNet stem without TwinLiteNet's attention is not claimed either
    plain = {k: v for k, v in random_state_dict("twinlitenet").items() if ".sa." not in k}
    assert _import_official(plain) is None


# -- spec: stride, preprocessing, outputs ----------------------------------------------------
def test_spec_declares_two_seg_tasks_and_resize_preprocessing(spec):
    assert spec.task_names == ("drivable", "lane") and spec.det is None
    assert [t.num_classes for t in spec.seg_tasks] == [2, 2]
    pre = spec.preprocess
    assert pre.input_hw == (360, 640) and pre.mean is None and pre.std is None
    assert pre.letterbox is False and pre.color == "RGB"
    assert pre.to_dict()["mean"] == [0.0, 0.0, 0.0] and pre.to_dict()["std"] == [1.0, 1.0, 1.0]
    assert spec.stride == 8
    assert spec.check_input_hw((360, 640)) == (360, 640)  # 360 is no multiple of 32


def test_forward_at_the_official_size(spec):
    model = build_model("twinlitenet").eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 360, 640))
    spec.check_outputs(out, (360, 640), 1)
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "drivable": (1, 2, 360, 640),
        "lane": (1, 2, 360, 640),
    }


def test_train_and_eval_outputs_at_a_small_size(spec):
    model = build_model("twinlitenet")
    x = torch.rand(2, 3, *HW)
    out_train = model.train()(x)
    with torch.no_grad():
        out_eval = model.eval()(x)
    for out in (out_train, out_eval):
        spec.check_outputs(out, HW, 2)
    # the two decoders are separate: different weights, different maps
    assert not torch.allclose(out_eval["drivable"], out_eval["lane"])


def test_stride_rule_rejects_sizes_the_network_cannot_return(spec):
    model = build_model("twinlitenet").eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 100, 160))
    with pytest.raises(ModelSpecError, match="drivable"):  # 100 comes back as 104
        spec.check_outputs(out, (100, 160), 1)
    with pytest.raises(ModelSpecError, match=r"multiples of 8.*nearest valid size: 360 640"):
        spec.check_input_hw((358, 640))


def test_feature_info_matches_a_real_forward():
    model = build_model("twinlitenet").eval()
    mods = dict(model.named_modules())
    seen = {}
    hooks = [
        mods[f.module].register_forward_hook(
            lambda m, i, o, name=f.name: seen.__setitem__(name, o.shape)
        )
        for f in model.feature_info
    ]
    with torch.no_grad():
        model(torch.rand(1, 3, *HW))
    for h in hooks:
        h.remove()
    for f in model.feature_info:
        assert seen[f.name][1] == f.channels
        assert (HW[0] // seen[f.name][2], HW[1] // seen[f.name][3]) == (f.stride, f.stride)
    spec = get_spec("twinlitenet")
    assert set(spec.taps) <= {f.name for f in model.feature_info}


# -- loss ------------------------------------------------------------------------------------
def test_loss_on_synthetic_data_gives_per_task_gradients(synth_dataset, spec):
    ds = BddDataset(synth_dataset, "train", DataConfig(input_hw=HW))
    batch = collate([ds[0], ds[1]])
    model = build_model("twinlitenet").train()
    loss_fn = spec.loss(model)
    losses = loss_fn(model(batch["images"]), batch)
    assert set(losses) == {"drivable", "lane"}
    w = model.encoder.level1.conv.weight
    for task, value in losses.items():
        assert value.ndim == 0 and torch.isfinite(value) and value > 0
        (g,) = torch.autograd.grad(value, w, retain_graph=True)
        assert g.abs().sum() > 0, task
    # the drivable loss does not reach the lane decoder
    lane_head = model.classifier_2.deconv.weight
    assert torch.autograd.grad(losses["drivable"], lane_head, allow_unused=True) == (None,)


def test_loss_ranks_good_predictions_below_bad_ones_and_skips_missing_tasks():
    loss_fn = SegmentationLoss(TWINLITE_LOSS)
    target = (torch.rand(2, 16, 16) > 0.7).long()
    onehot = torch.nn.functional.one_hot(target, 2).permute(0, 3, 1, 2).float()
    good = loss_fn({"lane": (onehot * 2 - 1) * 8}, {"lane": target})
    bad = loss_fn({"lane": (1 - onehot * 2) * 8}, {"lane": target})
    assert set(good) == {"lane"}  # drivable not in the outputs: not computed
    assert good["lane"] < 0.05 < 1.0 < bad["lane"]


def test_optimizer_steps_lower_the_loss_without_nans(spec):
    torch.manual_seed(0)
    model = build_model("twinlitenet").train()
    batch = seg_batches(1)[0]
    loss_fn = spec.loss(model)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    history = []
    for _ in range(6):
        loss = total_loss(loss_fn(model(batch["images"]), batch))
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    assert all(torch.isfinite(torch.tensor(history)))
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert history[-1] < history[0]


# -- pruning ---------------------------------------------------------------------------------
def test_prune_shrinks_and_keeps_the_output_contract(pruned, spec):
    teacher, student, res = pruned
    assert count_params(student) == res.report.params_after < 0.85 * OFFICIAL_PARAMS
    assert student.classifier_1.deconv.out_channels == 2
    assert student.classifier_2.deconv.out_channels == 2
    x = torch.rand(2, 3, *HW)
    spec.check_outputs(student.train()(x), HW, 2)
    with torch.no_grad():
        spec.check_outputs(student.eval()(x), HW, 2)
    # attention is left alone (a matrix product mixes its channels), and said so
    reasons = {f["root"]: f["reason"] for f in res.report.frozen}
    assert "matrix product" in reasons["encoder.b3.conv"]
    assert student.encoder.sa.value_conv.out_channels == 32


def test_feature_info_follows_pruning(pruned):
    teacher, student, _ = pruned
    mods = dict(student.named_modules())
    before = {f.name: f.channels for f in teacher.feature_info}
    after = {f.name: f.channels for f in student.feature_info}
    for f in student.feature_info:
        assert f.channels == mods[f.module].conv.out_channels
    assert any(after[n] < before[n] for n in after)


def test_esp_concat_coupling_is_traced_through_the_image_pyramid():
    """b2 reads cat([level2 output, level2_0 output, pooled image]); both 64-channel inputs
    are one residual trunk, so a trunk channel is two input channels of b2 (j and 64 + j)."""
    model = build_model("twinlitenet")
    graph = PruneGraph(model, torch.rand(1, 3, *HW), get_spec("twinlitenet").protected)
    group = next(g for g in graph.groups if g.root == "encoder.level2_0.d1.conv")
    b2_in = next(s for s in group.slices if s.module == "encoder.b2.conv" and s.kind == "in")
    assert sorted(b2_in.local.tolist()) == list(range(16)) + list(range(64, 80))


def test_aggressive_prune_runs_and_keeps_trunks_consistent(spec):
    model = build_model("twinlitenet")
    cfg = PruneConfig(
        ratio=0.5, importance="l1", round_to=1, min_width=1, calib_batches=1, flops_input_hw=HW
    )
    res = prune(model, None, seg_batches(1), cfg, progress=False)
    layers = res.record["layers"]
    trunk = layers["encoder.level2_0.bn"]["kept_out"]
    assert trunk is not None and len(trunk) < 64
    assert layers["encoder.level2.1.bn.bn"]["kept_out"] == trunk
    assert layers["encoder.b2.conv"]["kept_in"] == trunk + [64 + i for i in trunk] + [128, 129, 130]
    with torch.no_grad():
        spec.check_outputs(model.eval()(torch.rand(1, 3, *HW)), HW, 1)


def test_pruned_checkpoint_rebuilds(pruned, tmp_path):
    _, student, res = pruned
    path = tmp_path / "twin.pt"
    save_checkpoint(path, student, pruning=res.record)
    loaded, ckpt = load_checkpoint(path)
    assert ckpt.model_name == "twinlitenet"
    x = torch.rand(1, 3, *HW)
    with torch.no_grad():
        a, b = student.eval()(x), loaded.eval()(x)
    assert torch.equal(a["lane"], b["lane"]) and torch.equal(a["drivable"], b["drivable"])


def test_onnx_export_matches_torch_at_another_batch(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = build_model("twinlitenet").eval()
    with torch.no_grad():  # attention switched on (gamma starts at 0 in a fresh model)
        model.encoder.sa.gamma.fill_(0.5)
        model.encoder.sc.gamma.fill_(0.5)
    path = tmp_path / "twin.onnx"
    torch.onnx.export(
        model,
        (torch.zeros(1, 3, *HW),),
        str(path),
        opset_version=17,
        dynamo=False,
        input_names=["images"],
        output_names=["drivable", "lane"],
        dynamic_axes={"images": {0: "batch"}},
    )
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.rand(2, 3, *HW, generator=torch.Generator().manual_seed(3))
    got = dict(zip(("drivable", "lane"), sess.run(None, {"images": x.numpy()})))
    with torch.no_grad():
        ref = model(x)
    for task in ("drivable", "lane"):
        torch.testing.assert_close(torch.from_numpy(got[task]), ref[task], rtol=1e-3, atol=1e-4)


# -- loss options (the model spec's TwinLiteLossConfig) -------------------------------------------
def _trainer_losses(data: Path, out: Path, **loss: float) -> dict[str, float]:
    """The per-task losses the trainer's own loss_fn computes on the first training batch of a
    TwinLiteNet run with the loss options `loss`."""
    from compressor.train import TrainConfig
    from compressor.train.ddp import cleanup, init_distributed
    from compressor.train.loop import Trainer

    cfg = TrainConfig(
        data=str(data), out=str(out), model="twinlitenet", imgsz=HW, batch=2, workers=0,
        augment=False, ema=False, progress=False, device="cpu", loss=loss,
    )  # fmt: skip
    ctx = init_distributed(cfg.device)
    try:
        trainer = Trainer(cfg, ctx, None, None, None, None)
        try:
            torch.manual_seed(0)
            batch = next(iter(trainer.data.loader))
            with torch.no_grad():
                losses = trainer.loss_fn(trainer.model(batch["images"]), batch)
        finally:
            trainer.close()
    finally:
        cleanup(ctx)
    return {k: float(v) for k, v in losses.items()}


def test_loss_weights_change_the_loss_the_trainer_computes(synth_dataset, tmp_path):
    base = _trainer_losses(synth_dataset, tmp_path / "a")
    heavy = _trainer_losses(synth_dataset, tmp_path / "b", lane_weight=3.0, drivable_weight=0.5)
    assert base["lane"] > 0 and base["drivable"] > 0
    assert heavy["lane"] == pytest.approx(3.0 * base["lane"], rel=1e-5)
    assert heavy["drivable"] == pytest.approx(0.5 * base["drivable"], rel=1e-5)


def test_a_yolop_only_loss_option_is_a_clear_error(synth_dataset, tmp_path):
    from compressor.losses import LossConfigError

    with pytest.raises(LossConfigError) as e:
        _trainer_losses(synth_dataset, tmp_path / "c", box_gain=0.1)
    assert str(e.value) == (
        "model 'twinlitenet' has no loss option box_gain; its loss options: drivable_weight, "
        "lane_weight"
    )
    assert not (tmp_path / "c").exists()  # refused before the run wrote anything


def test_checkpoints_from_before_per_model_loss_options_still_resume():
    """They stored YOLOP's full loss block for every model; TwinLiteNet ignored it then."""
    from dataclasses import asdict

    from compressor.losses import TwinLiteLossConfig, YolopLossConfig
    from compressor.train import TrainConfig
    from compressor.train.config import loss_config_for

    old = {"data": "d", "model": "twinlitenet", "loss": asdict(YolopLossConfig(lane_weight=2.0))}
    cfg = TrainConfig.from_dict(old)
    assert loss_config_for(get_spec("twinlitenet"), cfg.loss) == TwinLiteLossConfig()
    yolop = loss_config_for(get_spec("yolop"), cfg.loss)
    assert yolop == YolopLossConfig(lane_weight=2.0)
