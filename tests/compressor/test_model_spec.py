"""The model spec: what the pipeline reads about a model, and the errors for models and inputs
that do not match it."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from compressor.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from compressor.models import build_model
from compressor.models.registry import get_spec, import_official, spec_of
from compressor.models.spec import (
    KIND_SEGMENTATION,
    ModelSpec,
    ModelSpecError,
    PreprocessSpec,
    TaskSpec,
)
from runtime.decoders import DecoderError


def test_yolop_spec_declares_its_tasks_and_rules():
    spec = get_spec("yolop")
    assert spec.task_names == ("det", "drivable", "lane")
    assert spec.det is not None and spec.det.decoder == "yolop_anchor"
    assert [t.num_classes for t in spec.seg_tasks] == [2, 2]
    assert spec.stride == 32 and spec.preprocess.input_hw == (384, 640)
    model = build_model("yolop", width=0.25, depth=0.33)
    assert spec_of(model) is spec
    params = spec.decoder_info(model)
    assert params["strides"] == [8, 16, 32] and len(params["anchors"]) == 3
    # every protected module exists
    names = dict(model.named_modules())
    assert all(p in names for p in spec.protected)


def test_unknown_task_kind_and_decoder_list_the_valid_ones():
    with pytest.raises(ModelSpecError, match="unknown task kind 'depth'.*detection, segmentation"):
        TaskSpec("x", "depth", ("a",))
    with pytest.raises(DecoderError, match="unknown detection decoder 'yolo_anchor'.*yolop_anchor"):
        TaskSpec("det", "detection", ("car",), decoder="yolo_anchor")


def test_input_size_rule_suggests_the_nearest_valid_size():
    spec = get_spec("yolop")
    assert spec.check_input_hw((192, 320)) == (192, 320)
    with pytest.raises(
        ModelSpecError, match=r"360x640.*multiples of 32.*nearest valid size: 352 640"
    ):
        spec.check_input_hw((360, 640))


def test_input_size_has_a_maximum_and_negative_sizes_get_a_hint():
    spec = get_spec("yolop")
    assert spec.check_input_hw((4096, 4096)) == (4096, 4096)
    with pytest.raises(ModelSpecError) as e:
        spec.check_input_hw((32000, 32000), "imgsz")
    assert str(e.value) == (
        "imgsz 32000x32000 (HxW) is larger than the maximum of 4096 per side (one float32 input "
        "of batch 1 is 11.4 GiB, its activations roughly 1689.0 GiB); nearest valid size: "
        "4096 4096"
    )
    with pytest.raises(ModelSpecError, match=r"got \(-32, 320\); nearest valid size: 32 320"):
        spec.check_input_hw((-32, 320))


def test_forward_that_breaks_the_spec_names_task_and_shapes():
    spec = get_spec("yolop")
    model = build_model("yolop", width=0.25, depth=0.33).eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 64, 96))
    spec.check_outputs(out, (64, 96), 1)  # the real thing passes
    with pytest.raises(ModelSpecError, match=r"returned tasks \['det', 'drivable'\].*declares"):
        spec.check_outputs({k: v for k, v in out.items() if k != "lane"}, (64, 96), 1)
    bad = {**out, "lane": out["lane"][:, :1]}
    with pytest.raises(
        ModelSpecError,
        match=r"task 'lane' \(segmentation\).*\[1, 1, 64, 96\].*"
        r"expects \[1, 2, 64, 96\]",
    ):
        spec.check_outputs(bad, (64, 96), 1)


class _TwoHeads(nn.Module):
    """An unregistered seg-only model."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a = nn.Conv2d(8, 2, 1)
        self.b = nn.Conv2d(8, 3, 1)

    def forward(self, x):
        f = torch.relu(self.stem(x))
        return {"drivable": self.a(f), "lane": self.b(f)}


def _two_heads_spec() -> ModelSpec:
    return ModelSpec(
        name="two_heads",
        tasks=(
            TaskSpec("drivable", KIND_SEGMENTATION, ("bg", "road")),
            TaskSpec("lane", KIND_SEGMENTATION, ("bg", "solid", "dashed")),
        ),
        loss=lambda model, cfg=None: None,
        stride=1,
        preprocess=PreprocessSpec(input_hw=(36, 64), mean=None, std=None, letterbox=True),
        protected=("a", "b"),
    )


def test_unregistered_model_saves_and_loads_with_its_spec(tmp_path):
    spec, model = _two_heads_spec(), _TwoHeads()
    with pytest.raises(ModelSpecError, match="has no model spec.*pass spec="):
        spec_of(model)
    ckpt = save_checkpoint(tmp_path / "m.pt", model, spec=spec)
    assert ckpt.model_name == "two_heads" and ckpt.tasks == ["drivable", "lane"]
    assert ckpt.class_names == []  # no detection task
    assert ckpt.preprocess["mean"] == [0.0, 0.0, 0.0] and ckpt.preprocess["std"] == [1.0] * 3
    loaded, back = load_checkpoint(tmp_path / "m.pt", model=_TwoHeads())
    assert back.tasks == ["drivable", "lane"]
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)


def test_foreign_state_dict_names_the_closest_registered_model(tmp_path):
    sd = build_model("yolop", width=0.25, depth=0.33).state_dict()
    sd = {f"module.{k}": v for k, v in sd.items() if not k.endswith("anchors")}
    torch.save({"state_dict": sd}, tmp_path / "foreign.pth")
    with pytest.raises(
        CheckpointError, match="no registered model's importer.*closest registered model: 'yolop'"
    ):
        load_checkpoint(tmp_path / "foreign.pth")


def test_official_yolop_keys_are_recognised_with_or_without_module_prefix():
    sd = build_model("yolop").state_dict()
    for prefix in ("", "module."):
        got = import_official({prefix + k: v for k, v in sd.items()})
        assert got is not None and got[0] == "yolop"
        assert got[1] == {"width": 1.0, "depth": 1.0, "num_classes": 1}
        build_model("yolop", **got[1]).load_state_dict(got[2], strict=True)
    assert import_official({"encoder.weight": torch.zeros(1)}) is None


PRE = PreprocessSpec(input_hw=(64, 64), mean=None, std=None, letterbox=False)


def test_spec_rejects_two_detection_tasks_and_duplicate_names():
    det = TaskSpec("det", "detection", ("car",), decoder="yolop_anchor")
    with pytest.raises(ModelSpecError, match="at most one detection task"):
        ModelSpec("x", (det, replace(det, name="det2")), loss=lambda m: None, preprocess=PRE)
    seg = TaskSpec("lane", KIND_SEGMENTATION, ("bg", "lane"))
    with pytest.raises(ModelSpecError, match="unique"):
        ModelSpec("x", (seg, seg), loss=lambda m: None, preprocess=PRE)
