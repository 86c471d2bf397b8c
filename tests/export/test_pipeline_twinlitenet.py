"""TwinLiteNet (two segmentation tasks, no detection) through the whole pipeline: its official
checkpoint file exports with `mtc-export best.pth`, the runtime's masks for a 1280x720 frame
equal PyTorch + the documented postprocess, and a small one trains, prunes (tci_gcp), distills,
saves/loads, exports with parity, runs, is scored and overlaid."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import small_config, synth_data, train_and_compress

from compressor.checkpoint import load_checkpoint
from compressor.data import BddDataset, DataConfig, make_loader
from compressor.models import build_model
from compressor.train import EvalConfig, evaluate
from demo.report import write_overlays
from export import export_model
from export.cli import main as export_main
from runtime.pipeline import RunConfig, run
from runtime.sidecar import read_sidecar

SHAPES = Path(__file__).parents[1] / "data" / "twinlitenet_state_dict_shapes.json"
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _official_file(path: Path) -> dict:
    """A file laid out as the official pretrained/best.pth (DataParallel's `module.` keys) with
    random weights and BN statistics calibrated on random images (so masks are not constant)."""
    g = torch.Generator().manual_seed(0)
    shapes = json.loads(SHAPES.read_text())
    model = build_model("twinlitenet")
    model.load_state_dict(
        {
            k: torch.randn(s, generator=g) * 0.3
            for k, s in shapes.items()
            if "running" not in k and "num_batches" not in k
        },
        strict=False,
    )
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration passes
    with torch.no_grad():
        model.train()(torch.rand(2, 3, 360, 640, generator=g))
    sd = model.state_dict()
    assert set(sd) == set(shapes)
    torch.save({f"module.{k}": v for k, v in sd.items()}, path)
    return sd


def _frame_1280x720() -> np.ndarray:
    rng = np.random.default_rng(0)
    frame = cv2.resize(rng.integers(0, 255, (45, 80, 3), dtype=np.uint8), (1280, 720))
    cv2.rectangle(frame, (200, 400), (1000, 719), (90, 90, 90), -1)  # a road-like block
    return frame


def test_mtc_export_official_file_and_runtime_masks_match_pytorch(tmp_path, capsys):
    sd = _official_file(tmp_path / "best.pth")
    out = tmp_path / "export"
    code = export_main(
        [
            str(tmp_path / "best.pth"),
            "-o",
            str(out),
            "--engine",
            "none",
            "--no-progress",
            "--max-batch",
            "1",
        ]
    )
    assert code in (0, None), capsys.readouterr().err
    sc = read_sidecar(out / "best.onnx")
    assert sc.det is None and sc.seg.tasks == ("drivable", "lane")
    assert sc.preprocess.input_hw == (360, 640) and not sc.preprocess.letterbox
    assert sc.preprocess.mean == (0.0, 0.0, 0.0) and sc.preprocess.std == (1.0, 1.0, 1.0)
    assert [o.name for o in sc.outputs] == ["drivable", "lane"]
    assert sc.model.name == "twinlitenet" and sc.model.params == 439633
    summary = json.loads((out / "export_summary.json").read_text())
    assert summary["parity"]["ok"] and summary["fp16"]["onnxruntime"]["ok"]

    frame = _frame_1280x720()
    got = run(out / "best.onnx", [frame], RunConfig(progress=False)).results[0]
    # PyTorch + the documented postprocess (docs/RUNTIME.md): BGR -> RGB, resize to 640x360
    # (area interpolation when shrinking), /255, argmax per task, nearest back to 1280x720
    model = build_model("twinlitenet")
    model.load_state_dict(sd, strict=True)
    rgb = cv2.resize(frame, (640, 360), interpolation=cv2.INTER_AREA)[..., ::-1]
    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        ref = model.eval()(x)
    fractions = []
    for task in ("drivable", "lane"):
        net = ref[task].argmax(1)[0].numpy().astype(np.uint8)
        want = cv2.resize(net, (1280, 720), interpolation=cv2.INTER_NEAREST)
        mask = got.mask(task)
        assert mask.shape == (720, 1280)
        # a pixel may differ only where PyTorch's two logits tie to float error
        margin = (ref[task][0, 1] - ref[task][0, 0]).abs().numpy()
        tie = cv2.resize(margin, (1280, 720), interpolation=cv2.INTER_NEAREST) < 1e-4
        assert np.count_nonzero((mask != want) & ~tie) == 0
        fractions.append(np.count_nonzero(want) / want.size)
    assert any(0 < f < 1 for f in fractions), fractions  # not only constant masks compared


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return synth_data(tmp_path_factory.mktemp("tln") / "bdd")


def test_small_twinlitenet_trains_prunes_distills_exports_runs(data, tmp_path):
    torch.set_num_threads(1)
    hw = (72, 128)  # stride 8, 16:9 like the frames (TwinLiteNet resizes, no letterbox)
    teacher, res = train_and_compress(data, tmp_path, ratio=0.2, model="twinlitenet", imgsz=hw)
    _, tckpt = load_checkpoint(teacher.last)
    assert tckpt.preprocess["letterbox"] is False and tckpt.preprocess["std"] == [1.0, 1.0, 1.0]
    assert tckpt.tasks == ["drivable", "lane"] and tckpt.class_names == []
    assert res.report["params_reduction"] > 0.1
    assert set(res.report["deltas_points"]) >= {"drivable_miou", "lane_iou"}
    assert "det_map50" not in res.report["deltas_points"]
    student, ckpt = load_checkpoint(res.checkpoint)
    assert ckpt.model_name == "twinlitenet" and ckpt.pruning is not None

    ds = BddDataset(str(data), "val", DataConfig.for_preprocess(ckpt.preprocess))
    rep = evaluate(student, make_loader(ds, 2, shuffle=False), EvalConfig(progress=False))
    assert rep["tasks"] == ["drivable", "lane"] and "det_map50" not in rep["summary"]

    out = tmp_path / "export"
    exp = export_model(
        str(res.checkpoint), small_config(out, output={"name": "s"}, tensorrt={"engine": "none"})
    )
    assert exp.summary["parity"]["ok"] and exp.summary["lint"]["fp32"]["ok"]
    assert exp.summary["fp16"]["onnxruntime"]["ok"]
    frame = cv2.imread(str(sorted((data / "images" / "val").iterdir())[0]))
    result = run(out / "s.onnx", [frame], RunConfig(progress=False)).results[0]
    assert result.boxes.shape == (0, 4)
    assert result.drivable.shape == frame.shape[:2] and result.lane.shape == frame.shape[:2]
    ov = write_overlays([frame], [result], [result], tmp_path / "ov", "t", ())
    assert len(ov) == 1 and cv2.imread(str(ov[0])) is not None
