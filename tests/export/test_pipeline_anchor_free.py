"""The whole pipeline on a model that is not YOLOP and not registered: the test-only three-task
model with the anchor-free DFL head (tests/models). Train a few steps on the synthetic set,
prune (tci_gcp) + distill, save and load, export (ONNX, FP16 ONNX, lint, parity), run in the
torch-free runtime (the runtime decodes the raw head with the sidecar's decoder), evaluate with
the project's metrics, overlays. Its spec travels as `model.model_spec` / `spec=`."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import small_config, synth_data, train_and_compress

sys.path.insert(0, str(Path(__file__).parents[1] / "models"))
from anchor_free_three_task import INPUT_HW, SPEC, build  # noqa: E402

from compressor.checkpoint import load_checkpoint  # noqa: E402
from compressor.data import BddDataset, DataConfig, make_loader  # noqa: E402
from compressor.models.heads.anchor_free import decode_torch  # noqa: E402
from compressor.train import EvalConfig, evaluate  # noqa: E402
from demo.report import write_overlays  # noqa: E402
from export import export_model  # noqa: E402
from runtime.boxes import postprocess_detections  # noqa: E402
from runtime.geometry import boxes_from_letterbox  # noqa: E402
from runtime.pipeline import RunConfig, run  # noqa: E402
from runtime.sidecar import read_sidecar  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return synth_data(tmp_path_factory.mktemp("af") / "bdd")


@pytest.fixture(scope="module")
def student_ckpt(data, tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    work = tmp_path_factory.mktemp("af_run")
    _, res = train_and_compress(data, work, arch=lambda: build(width=8), imgsz=INPUT_HW, ema=False)
    assert res.report["params_reduction"] > 0.2
    assert set(res.report["deltas_points"]) >= {"det_map50", "drivable_miou", "lane_iou"}
    assert res.report["training"]["kd"] and res.report["training"]["taps"]
    return res.checkpoint


def test_student_checkpoint_rebuilds_the_pruned_model(student_ckpt):
    model, ckpt = load_checkpoint(student_ckpt, model=build(width=8))
    assert ckpt.model_name == "anchor_free_three_task" and ckpt.pruning is not None
    assert ckpt.tasks == ["det", "drivable", "lane"] and ckpt.class_names == ["vehicle"]
    n_teacher = sum(p.numel() for p in build(width=8).parameters())
    assert sum(p.numel() for p in model.parameters()) < 0.8 * n_teacher
    with torch.no_grad():
        out = model.eval()(torch.zeros(1, 3, *INPUT_HW))
    SPEC.check_outputs(out, INPUT_HW, 1)


def test_export_and_runtime_decode_the_raw_head(student_ckpt, data, tmp_path):
    out = tmp_path / "export"
    res = export_model(
        str(student_ckpt),
        small_config(out, output={"name": "af"}, tensorrt={"engine": "none"}),
        spec=SPEC,
        model=build(width=8),
    )
    s = res.summary
    assert s["parity"]["ok"] and s["fp16"]["onnxruntime"]["ok"] and s["lint"]["fp32"]["ok"]
    assert "det.boxes" in s["parity"]["outputs"]  # boxes compared after the numpy decode
    sc = read_sidecar(out / "af.onnx")
    assert not sc.det.decoded_in_graph and sc.det.decoder == "anchor_free_dfl"
    assert sc.det.strides == (8, 16, 32) and sc.det.reg_max == 16
    assert sc.det.layout == "cxcywh_obj_cls" and sc.seg.tasks == ("drivable", "lane")

    # runtime on a real val frame vs PyTorch + the documented postprocess (same thresholds)
    frame_path = sorted((data / "images" / "val").iterdir())[0]
    frame = cv2.imread(str(frame_path))
    # a low confidence so that the barely trained head yields boxes to compare
    cfg = RunConfig(progress=False, conf=0.01, max_det=300)
    result = run(out / "af.onnx", [frame], cfg).results[0]
    t = cfg.thresholds(sc)
    model, _ = load_checkpoint(student_ckpt, model=build(width=8))
    ds = BddDataset(str(data), "val", DataConfig(input_hw=INPUT_HW))
    batch = next(iter(make_loader(ds, 1, shuffle=False)))
    with torch.no_grad():
        raw = model.eval()(batch["images"])["det"]
    rows = decode_torch(raw, INPUT_HW, (8, 16, 32), 16).numpy()
    ref = postprocess_detections(rows, t.conf_thres, t.iou_thres, t.max_det)[0]
    ref_boxes = boxes_from_letterbox(ref[:, :4], batch["meta"][0]["letterbox"])
    assert len(result.boxes) == len(ref_boxes) > 0
    assert np.abs(result.boxes - ref_boxes).max() < 0.05  # px, after NMS, frame pixels
    assert result.drivable.shape == frame.shape[:2] and result.lane.shape == frame.shape[:2]

    overlays = write_overlays([frame], [result], [result], tmp_path / "ov", "af", SPEC.class_names)
    assert len(overlays) == 1 and cv2.imread(str(overlays[0])) is not None


def test_metrics_score_every_task(student_ckpt, data):
    model, ckpt = load_checkpoint(student_ckpt, model=build(width=8))
    ds = BddDataset(str(data), "val", DataConfig.for_preprocess(ckpt.preprocess))
    rep = evaluate(model, make_loader(ds, 2, shuffle=False), EvalConfig(progress=False))
    assert rep["tasks"] == ["det", "drivable", "lane"]
    s = rep["summary"]
    assert 0.0 <= s["det_map50"] <= 1.0 and 0.0 <= s["drivable_miou"] <= 1.0
    assert rep["det"]["yolop"]["num_gt"] > 0 if "num_gt" in rep["det"]["yolop"] else True
