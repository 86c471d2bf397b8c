"""The built-in YOLOP: official state-dict compatibility, feature taps, registry strictness."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from compressor import build_model, list_models, load_checkpoint, save_checkpoint
from compressor.checkpoint import CheckpointError
from compressor.models import DuplicateModelError, UnknownModelError, register_model
from compressor.models.registry import get_spec
from runtime.spec import TASKS

MANIFEST = Path(__file__).parents[1] / "data" / "yolop_state_dict_shapes.json"


def test_width1_matches_official_state_dict_manifest():
    manifest = json.loads(MANIFEST.read_text())
    sd = build_model("yolop").state_dict()
    assert len(manifest) == 542
    assert set(sd) == set(manifest)
    wrong = {k: (list(sd[k].shape), v) for k, v in manifest.items() if list(sd[k].shape) != v}
    assert wrong == {}


def test_official_checkpoint_loads_strictly(tmp_path):
    # An official End-to-end.pth is a dict with a `state_dict`; build one with the manifest shapes.
    manifest = json.loads(MANIFEST.read_text())
    g = torch.Generator().manual_seed(0)
    sd = {k: torch.randn(v, generator=g) if v else torch.tensor(7) for k, v in manifest.items()}
    torch.save({"epoch": 240, "state_dict": sd}, tmp_path / "End-to-end.pth")
    model, ckpt = load_checkpoint(tmp_path / "End-to-end.pth")
    assert ckpt.model_name == "yolop" and ckpt.model_config["width"] == 1.0
    w = "model.9.m.0.cv2.conv.weight"
    assert torch.equal(model.state_dict()[w], sd[w])


def test_parameter_count_is_yolop():
    n = sum(p.numel() for p in build_model("yolop").parameters())
    assert n == 7_940_846  # 7.94M, as published


@pytest.mark.parametrize("width,depth", [(0.25, 0.33), (0.5, 0.33), (1.0, 1.0)])
def test_feature_taps_match_forward(width, depth):
    model = build_model("yolop", width=width, depth=depth).eval()
    feats: dict[str, torch.Tensor] = {}
    hooks = [
        model.get_submodule(f.module).register_forward_hook(
            lambda _m, _i, o, n=f.name: feats.__setitem__(n, o)
        )
        for f in model.feature_info
    ]
    h, w = 128, 256
    with torch.no_grad():
        out = model(torch.zeros(1, 3, h, w))
    for hk in hooks:
        hk.remove()
    names = {f.name for f in model.feature_info}
    assert {"backbone_s8", "backbone_s16", "backbone_s32", "neck_s8", "neck_s32"} <= names
    for f in model.feature_info:
        assert feats[f.name].shape[1:] == (f.channels, h // f.stride, w // f.stride), f
    assert set(out) == set(TASKS)


def test_outputs_train_vs_eval_shapes():
    model = build_model("yolop", width=0.25, depth=0.33)
    x = torch.zeros(2, 3, 64, 128)
    raw = model.train()(x)["det"]
    assert [tuple(t.shape) for t in raw] == [(2, 3, 8, 16, 6), (2, 3, 4, 8, 6), (2, 3, 2, 4, 6)]
    with torch.no_grad():
        out = model.eval()(x)
    assert out["det"].shape == (2, 3 * (8 * 16 + 4 * 8 + 2 * 4), 6)
    assert out["drivable"].shape == out["lane"].shape == (2, 2, 64, 128)
    # Decoded boxes are in input pixels and probabilities in [0, 1].
    assert float(out["det"][..., 4:].min()) >= 0 and float(out["det"][..., 4:].max()) <= 1


def test_640x384_has_15120_candidates():
    with torch.no_grad():
        det = build_model("yolop", width=0.25, depth=0.33).eval()(torch.zeros(1, 3, 384, 640))[
            "det"
        ]
    assert det.shape == (1, 15120, 6)


def test_registry_is_strict():
    assert "yolop" in list_models()
    with pytest.raises(
        UnknownModelError, match=r"'yolp'.*registered models: .*yolop.*did you mean 'yolop'"
    ):
        build_model("yolp")
    with pytest.raises(DuplicateModelError, match="already registered"):
        register_model("yolop", get_spec("yolop"))(lambda: None)


def test_checkpoint_roundtrip_and_errors(tmp_path):
    model = build_model("yolop", width=0.25, depth=0.33).eval()
    save_checkpoint(tmp_path / "a.pt", model, metrics={"map50": 0.5})
    loaded, ckpt = load_checkpoint(tmp_path / "a.pt")
    x = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        assert torch.equal(model(x)["lane"], loaded.eval()(x)["lane"])
    assert ckpt.metrics == {"map50": 0.5} and len(ckpt.sha256) == 64
    assert not list(tmp_path.glob(".*tmp"))  # no temp file left behind
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pt is not a PyTorch checkpoint"):
        load_checkpoint(tmp_path / "bad.pt")
    torch.save({"hello": 1}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not an mtc checkpoint or a state dict"):
        load_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="does not fit"):
        load_checkpoint(tmp_path / "a.pt", model=build_model("yolop", width=0.25, depth=1.0))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
