"""`mtc-eval` on exported artifacts: the FP32 ONNX, run through the torch-free runtime's
preprocess / decode / NMS at the evaluation thresholds, scores what the checkpoint scores."""

from __future__ import annotations

import json
from pathlib import Path

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
