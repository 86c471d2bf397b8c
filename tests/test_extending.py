"""docs/EXTENDING.md, checked: every file it names exists, and each extension point takes a toy
one added exactly as the page says (a model with its spec, a task, an importance, a runtime
backend, a TensorRT target, a detection decoder), which then does its job. Every test removes
what it registered (the registries are process-wide)."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from compressor import build_model, list_models
from compressor.models import register_model
from compressor.models.registry import MODELS, spec_of
from compressor.models.spec import KIND_SEGMENTATION, ModelSpec, PreprocessSpec, TaskSpec
from compressor.pruning import (
    PruneConfig,
    list_importances,
    prune,
    register_importance,
    unregister_importance,
)
from compressor.pruning.importance import GroupScores
from export import export_model
from export.config import ExportConfig, HalfOptions, InputOptions, OutputOptions, TensorRTOptions
from export.tensorrt.lint import DATA_DIR, lint_onnx
from runtime import load_artifact
from runtime.backends import Backend, BackendOptions, InputSpec, register_backend
from runtime.backends.base import BACKENDS
from runtime.decoders import DECODERS, register_decoder
from runtime.geometry import letterbox_params
from runtime.io_names import DET_LAYOUT_CXCYWH, DET_OUTPUT
from runtime.pipeline import RunConfig, run
from runtime.postprocess import Postprocessor
from runtime.sidecar import DetInfo, read_sidecar
from runtime.tensorrt.targets import (
    TARGETS,
    get_target,
    register_target,
    resolve_target,
    target_for_version,
)
from runtime.testing import StandinConfig, build_standin_onnx, standin_sidecar

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "EXTENDING.md"
SECTIONS = ("model", "task", "importance", "backend", "tensorrt", "decoder")
HW = (64, 64)


# -- the page ---------------------------------------------------------------------------------
def _file_lists() -> dict[str, list[tuple[str, str]]]:
    """Per section (its `<!-- files: NAME -->` marker), the (verb, path) of each list line
    `- new `path`` / `- touch `path``."""
    lists: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in DOC.read_text().splitlines():
        marker = re.fullmatch(r"<!-- files: (\w+) -->", line.strip())
        if marker:
            current = marker.group(1)
            lists[current] = []
            continue
        item = re.match(r"- (new|touch) `([^`]+)`", line)
        if current and item:
            lists[current].append((item.group(1), item.group(2)))
        elif current and line.strip() and not line.startswith("  "):
            current = None  # the list ended
    return lists


def test_every_extension_point_has_a_file_list_and_every_file_exists():
    lists = _file_lists()
    assert set(lists) == set(SECTIONS)
    for section, items in lists.items():
        assert items, f"{section}: empty file list"
        for verb, path in items:
            if verb == "touch":
                assert (ROOT / path).is_file(), f"{section}: {path} does not exist"
            else:  # a new file: its folder exists, the file does not yet
                assert "<name>" in path, f"{section}: new file {path} should be a pattern"
                assert (ROOT / path).parent.is_dir(), f"{section}: no folder for {path}"


# -- a model with its spec, and a task ----------------------------------------------------------
class ToyNet(nn.Module):
    """Two segmentation tasks: the built-in `drivable` and a new `sidewalk` with 3 classes."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 2, 1), nn.BatchNorm2d(width), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(width, width, 3, 1, 1), nn.ReLU())
        self.drivable_head = nn.Conv2d(width, 2, 1)
        self.sidewalk_head = nn.Conv2d(width, 3, 1)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.body(self.stem(images))
        up = lambda t: F.interpolate(t, size=images.shape[-2:], mode="nearest")  # noqa: E731
        return {"drivable": up(self.drivable_head(f)), "sidewalk": up(self.sidewalk_head(f))}


def toy_loss(model: nn.Module, config: object = None):
    def loss(outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        return {t: F.cross_entropy(outputs[t], batch[t]) for t in ("drivable", "sidewalk")}

    return loss


TOY_SPEC = ModelSpec(
    name="toynet",
    tasks=(
        TaskSpec("drivable", KIND_SEGMENTATION, ("background", "road")),
        TaskSpec("sidewalk", KIND_SEGMENTATION, ("background", "sidewalk", "curb")),
    ),
    loss=toy_loss,
    preprocess=PreprocessSpec(input_hw=HW, mean=None, std=None, letterbox=True),
    stride=2,
    protected=("drivable_head", "sidewalk_head"),
)


@pytest.fixture
def toynet() -> Iterator[str]:
    register_model("toynet", spec=TOY_SPEC)(lambda width=16: ToyNet(width))
    yield "toynet"
    MODELS.unregister("toynet")
    assert "toynet" not in list_models()


def _batch(n: int = 4) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(n, 3, *HW, generator=g)
    return {
        "images": images,
        "drivable": (images[:, 0] > 0.5).long(),
        "sidewalk": (images[:, 1] * 3).long().clamp(max=2),
    }


def _export(model: nn.Module, out: Path, name: str) -> Path:
    cfg = ExportConfig(
        output=OutputOptions(dir=str(out), name=name, progress=False),
        input=InputOptions(imgsz=HW, max_batch=2),
        half=HalfOptions(enabled=False),
        tensorrt=TensorRTOptions(engine="none"),
    )
    export_model(model, cfg)
    return out / f"{name}.onnx"


def test_a_toy_model_registered_with_its_spec_trains_and_exports(toynet, tmp_path):
    assert "toynet" in list_models()
    torch.manual_seed(0)
    model = build_model(toynet, width=16)
    assert spec_of(model) is TOY_SPEC and model.config == {"width": 16}
    loss_fn = TOY_SPEC.loss(model, TOY_SPEC.loss_config())
    batch = _batch()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    first = None
    for _ in range(5):
        losses = loss_fn(model(batch["images"]), batch)
        assert set(losses) == {"drivable", "sidewalk"}  # per task, never only the sum
        total = sum(losses.values())
        first = float(total.detach()) if first is None else first
        opt.zero_grad()
        total.backward()
        opt.step()
    with torch.no_grad():
        assert float(sum(loss_fn(model(batch["images"]), batch).values())) < first
    onnx_path = _export(model.eval(), tmp_path / "out", "toynet")
    sc = read_sidecar(onnx_path)
    assert sc.model.name == "toynet" and sc.det is None
    assert tuple(sc.preprocess.input_hw) == HW


def test_a_new_task_is_pruned_per_task_and_comes_out_of_the_runtime(toynet, tmp_path):
    torch.manual_seed(0)
    model = build_model(toynet)
    batch = _batch()
    loss_fn = TOY_SPEC.loss(model, None)
    res = prune(model, loss_fn, [batch], PruneConfig(ratio=0.3, importance="tci", round_to=4))
    assert res.record["params"][1] < res.record["params"][0]
    assert {"drivable", "sidewalk"} <= set(json.dumps(res.report.to_dict()).split('"'))
    onnx_path = _export(res.model.eval(), tmp_path / "out", "toynet")
    sc = read_sidecar(onnx_path)
    assert sc.seg.tasks == ("drivable", "sidewalk") and sc.seg.classes == (2, 3)
    frame = (np.random.default_rng(0).random((*HW, 3)) * 255).astype(np.uint8)  # BGR, net size
    result = run(onnx_path, [frame], RunConfig(progress=False)).results[0]
    rgb = torch.from_numpy(frame[..., ::-1].copy()).permute(2, 0, 1)[None].float() / 255.0
    with torch.no_grad():
        want = res.model(rgb)["sidewalk"].argmax(1)[0].numpy()
    got = result.masks_net["sidewalk"]
    assert got.shape == HW and set(np.unique(got)) <= {0, 1, 2}
    assert (got == want).mean() > 0.99


# -- a pruning importance -----------------------------------------------------------------------
def test_a_toy_importance_decides_what_the_pruner_keeps():
    @register_importance("toy_last_channels")
    def toy_last_channels(ctx):
        def score(group):  # higher = keep: the last channels of every group
            s = torch.arange(1, group.size + 1, dtype=torch.float32)
            return GroupScores(s / s.mean(), torch.zeros(group.size, dtype=torch.bool))

        return score

    try:
        assert "toy_last_channels" in list_importances()
        torch.manual_seed(0)
        model = ToyNet(16)
        res = prune(
            model,
            None,
            [_batch()["images"]],
            PruneConfig(importance="toy_last_channels", ratio=0.3, round_to=4),
            protected=TOY_SPEC.protected,
        )
        pruned = {n: r for n, r in res.record["layers"].items() if r["kept_out"] is not None}
        assert pruned, "nothing pruned"
        for name, layer in pruned.items():
            before, after = layer["out"]
            assert layer["kept_out"] == list(range(before - after, before)), name
    finally:
        unregister_importance("toy_last_channels")
    assert "toy_last_channels" not in list_importances()


# -- a runtime backend --------------------------------------------------------------------------
def test_a_toy_backend_is_loaded_by_load_artifact_and_matches_onnxruntime(tmp_path):
    onnx_reference = pytest.importorskip("onnx.reference")

    @register_backend("toy_reference", formats=("onnx",))
    class ToyReferenceBackend(Backend):
        """ONNX's pure-Python reference evaluator: slow, but needs no onnxruntime."""

        def _open(self) -> InputSpec:
            import onnx  # heavy libraries are imported when the backend opens, never at import

            model = onnx.load(str(self.path))
            self._session = onnx_reference.ReferenceEvaluator(model)
            self._names = tuple(o.name for o in model.graph.output)
            sc = self.sidecar
            assert sc is not None
            return InputSpec(sc.input.name, tuple(sc.input.shape), sc.input.dtype, 1, 1, None)

        def _close(self) -> None:
            self._session = None

        def _infer(self, batch: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, float]]:
            outs = self._session.run(None, {self.input_spec.name: batch})
            return dict(zip(self._names, (np.asarray(o) for o in outs))), {}

        def _output_names(self) -> tuple[str, ...]:
            return self._names

        def _device(self) -> str:
            return "cpu (onnx.reference)"

    try:
        path = build_standin_onnx(tmp_path / "s.onnx", StandinConfig())
        standin_sidecar(path)
        batch = np.random.default_rng(0).random((2, 3, 32, 64), dtype=np.float32)
        with load_artifact(path, backend="toy_reference") as toy:
            assert isinstance(toy, ToyReferenceBackend) and toy.options == BackendOptions()
            got = toy.infer(batch)
        with load_artifact(path) as ort:  # "auto" still picks onnxruntime for .onnx
            assert ort.name == "onnxruntime"
            want = ort.infer(batch)
        assert set(got) == set(want)
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-5)
    finally:
        BACKENDS.unregister("toy_reference")
    assert "toy_reference" not in BACKENDS


# -- a TensorRT release -------------------------------------------------------------------------
def test_a_toy_tensorrt_target_row_is_resolved_and_its_op_table_read(tmp_path):
    table = json.loads((DATA_DIR / get_target("11").op_table).read_text())
    table.update(tensorrt="12", confidence="derived")
    table["ops"]["Relu"] = {"supported": False, "types": []}  # the toy release dropped Relu
    op_table = tmp_path / "trt_ops_12.json"
    op_table.write_text(json.dumps(table))
    row = dataclasses.replace(
        get_target("11"), name="12", min_version=(12, 0), op_table=str(op_table), opset_max=25
    )
    register_target(row)
    try:
        assert get_target("12") is row
        assert target_for_version("12.1.0.5") is row and target_for_version("11.4.0").name == "11"
        assert resolve_target(None, "12.0.1") is row
        path = build_standin_onnx(tmp_path / "s.onnx", StandinConfig(conv_channels=4))
        ops = {i.op for i in lint_onnx(path, "12").issues if i.severity == "error"}
        assert "Relu" in ops and not lint_onnx(path, "11").errors
    finally:
        TARGETS.unregister("12")
    assert "12" not in TARGETS


# -- a detection decoder ------------------------------------------------------------------------
class ToyCornersDecoder:
    """Raw rows (x1, y1, x2, y2, class logits...) in input pixels -> (cx, cy, w, h, obj=1,
    sigmoid scores)."""

    name = "toy_corners"

    def check_params(self, params):
        return None

    def candidates(self, input_hw, params):
        return (input_hw[0] // 8) * (input_hw[1] // 8)

    def decode(self, raw, input_hw, params):
        xy1, xy2 = raw[..., 0:2], raw[..., 2:4]
        obj = np.ones_like(raw[..., :1])
        scores = 1.0 / (1.0 + np.exp(-raw[..., 4:]))
        return np.concatenate(((xy1 + xy2) / 2, xy2 - xy1, obj, scores), -1)


def test_a_toy_decoder_is_used_by_the_postprocess(tmp_path):
    register_decoder(ToyCornersDecoder())
    try:
        path = build_standin_onnx(tmp_path / "s.onnx", StandinConfig())
        sc = standin_sidecar(path)
        det = DetInfo(
            decoded_in_graph=False,
            layout=DET_LAYOUT_CXCYWH,
            class_names=("vehicle",),
            decoder="toy_corners",
        )
        sc = dataclasses.replace(sc, det=det, seg=None)
        raw = np.zeros((1, 3, 5), np.float32)
        raw[0, 0] = (4, 8, 20, 16, 5.0)  # a box scoring sigmoid(5) = 0.993
        raw[0, 1] = (30, 2, 40, 12, -5.0)  # below the deploy threshold
        raw[0, 2] = (5, 8, 21, 16, 4.0)  # overlaps the first: suppressed by NMS
        lb = letterbox_params((32, 64), (32, 64))  # frame = network input: boxes as they are
        [res] = Postprocessor(sc)({DET_OUTPUT: raw}, [lb], [0])
        np.testing.assert_allclose(res.boxes, [[4, 8, 20, 16]])
        np.testing.assert_allclose(res.scores, [1 / (1 + np.exp(-5.0))], rtol=1e-6)
    finally:
        DECODERS.unregister("toy_corners")
    assert "toy_corners" not in DECODERS
