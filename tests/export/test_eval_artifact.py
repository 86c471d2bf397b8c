"""`mtc-eval` on exported artifacts: the FP32 ONNX, run through the torch-free runtime's
preprocess / decode / NMS at the evaluation thresholds, scores what the checkpoint scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import small_config, synth_data

from compressor.cli.evaluate import main as eval_main
from export import export_model


@pytest.fixture(scope="module")
def exported(tiny_ckpt: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("evalart")
    data = synth_data(root / "data")
    result = export_model(tiny_ckpt, small_config(root / "out", tensorrt={"engine": "none"}))
    return data, result


def _eval(model: Path, data: Path, out: Path, *extra: str) -> dict:
    code = eval_main([str(model), "--data", str(data), "--no-progress", "--out", str(out), *extra])
    assert code == 0
    return json.loads(out.read_text())


@pytest.mark.parametrize("det_mode", ["yolop", "coco"])
def test_fp32_onnx_scores_the_checkpoints_metrics(exported, tiny_ckpt, tmp_path, det_mode):
    data, result = exported
    ck = _eval(tiny_ckpt, data, tmp_path / "ck.json", "--workers", "0", "--det-mode", det_mode)
    art = _eval(result.artifact("onnx"), data, tmp_path / "onnx.json", "--det-mode", det_mode)
    assert set(art["summary"]) == set(ck["summary"])
    for k, v in ck["summary"].items():
        assert abs(art["summary"][k] - v) <= 1e-3, k  # within 0.1 point
    assert art["num_images"] == ck["num_images"] == 4
    assert art["protocol"]["nms"] == ck["protocol"]["nms"]
    assert art["artifact"]["precision"] == "fp32" and "checkpoint" not in art
    assert art["artifact"]["sha256"] == result.artifacts[0]["sha256"]


def test_fp16_onnx_is_scored_too(exported, tmp_path):
    data, result = exported
    rep = _eval(result.artifact("onnx_fp16"), data, tmp_path / "fp16.json")
    assert rep["artifact"]["precision"] == "fp16" and 0 <= rep["summary"]["lane_iou"] <= 1


def test_an_artifact_without_sidecar_or_at_another_size_is_one_line(exported, tmp_path, capsys):
    data, result = exported
    lone = tmp_path / "lone.onnx"
    lone.write_bytes(result.artifact("onnx").read_bytes())
    assert eval_main([str(lone), "--data", str(data), "--out", str(tmp_path / "a.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no sidecar" in err[0] and "lone.onnx.json" in err[0]
    args = [str(result.artifact("onnx")), "--data", str(data), "--imgsz", "128", "256"]
    assert eval_main([*args, "--out", str(tmp_path / "b.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "exported for 64x128" in err[-1] and not (tmp_path / "b.json").exists()


def _agreement(exported):
    import onnx

    from compressor.train.agreement import Agreement
    from compressor.train.eval_artifact import build_eval_set
    from export.checks.ort import OrtModel
    from runtime.sidecar import read_sidecar

    data, result = exported
    path = result.artifact("onnx")
    sc = read_sidecar(path)
    evalset = build_eval_set(data, "val", sc.preprocess, "thin", None, progress=False)
    infer = OrtModel(onnx.load(str(path)), threads=1)
    return Agreement(infer, evalset, sc, batch=2), infer


def test_an_artifact_agrees_with_itself_and_a_wrong_mask_counts_its_pixels(exported):
    agreement, infer = _agreement(exported)
    assert agreement.tasks == ("det", "drivable", "lane")
    assert agreement(infer) == pytest.approx({"det": 0.0, "drivable": 0.0, "lane": 0.0}, abs=1e-12)

    def all_lane(images):
        out = dict(infer(images))
        out["lane"] = np.ones_like(out["lane"])
        return out

    ref_lane = np.stack([r.masks_net["lane"] for r in agreement.ref])
    expected = 1.0 - np.count_nonzero(ref_lane == 1) / ref_lane.size  # IoU with an all-lane mask
    got = agreement(all_lane)
    assert got["lane"] == pytest.approx(expected)
    assert got["det"] == 0.0 and got["drivable"] == 0.0


def test_box_agreement_is_iou_times_score_ratio_weighted_by_score():
    from compressor.train.agreement import _box_agreement
    from runtime.geometry import Letterbox
    from runtime.postprocess import FrameResult

    def frame(boxes, scores, classes):
        return FrameResult(
            frame_id=0,
            boxes=np.array(boxes, np.float32).reshape(-1, 4),
            scores=np.array(scores, np.float32),
            classes=np.array(classes, np.int64),
            masks_net={},
            letterbox=Letterbox(10, 10, 10, 10, 10, 10, 0, 0, 1.0),
            timing={},
        )

    a = frame([[0, 0, 10, 10], [20, 20, 30, 30]], [0.8, 0.2], [0, 0])
    b = frame([[0, 0, 10, 5], [20, 20, 30, 30]], [0.4, 0.2], [0, 1])  # IoU 0.5; other class
    agree, weight = _box_agreement(a, b)
    assert weight == pytest.approx(1.0)
    assert agree == pytest.approx(0.8 * 0.5 * (0.4 / 0.8))  # the second box matches no class
    assert _box_agreement(a, frame([], [], [])) == (0.0, pytest.approx(1.0))
