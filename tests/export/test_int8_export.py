"""`mtc-export --int8` end to end on the tiny YOLOP and a synthetic set: the planted
quantisation-hostile lane layer stays out of INT8 and the budgets hold, the artifacts and their
sidecars say what was done, `mtc-eval` scores the INT8 ONNX as the guard did, impossible budgets
keep the FP16 export and exit non-zero, and every bad input is one line before the work."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import IMGSZ, calibrated_tiny_yolop, small_config, synth_data

from export import export_model
from export.cli import main as export_main
from export.config import ExportConfig, Int8Budgets, Int8Options
from export.errors import ExportConfigError
from export.int8.calibrate import AUTO_CANDIDATES
from runtime.sidecar import read_sidecar

PLANTED = "model.39"  # a lane-head block of YOLOP: /model/model.39/conv/Conv
LOOSE = dict(det_recall=100.0, det_map50=100.0, drivable_miou=100.0)  # only the lane is guarded


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth_data(tmp_path_factory.mktemp("int8") / "data")


def planted_model() -> torch.nn.Module:
    """The tiny YOLOP with one lane-head conv whose input channel 0 is multiplied by 1e4 (and the
    conv's weights for it by 1e-4): FP32 outputs unchanged, but a per-tensor INT8 scale for that
    input leaves every other channel about one quantisation level."""
    model = calibrated_tiny_yolop()
    conv = model.model[39].conv
    with torch.no_grad():
        conv.weight[:, 0] *= 1e-4

    def boost(_mod, args):
        x = args[0].clone()
        x[:, 0] = x[:, 0] * 1e4
        return (x,)

    conv.register_forward_pre_hook(boost)
    return model


def int8_config(out: Path, data: Path, **int8) -> ExportConfig:
    cfg = small_config(out, tensorrt={"engine": "none"})
    opts = dict(enabled=True, calib_data=str(data), calib_images=6, calib_batch=2)
    opts.update(int8)
    return ExportConfig(
        output=cfg.output,
        input=replace(cfg.input, imgsz=IMGSZ),
        checks=cfg.checks,
        tensorrt=cfg.tensorrt,
        int8=Int8Options(**opts),
    )


@pytest.fixture(scope="module")
def planted_export(data: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("planted") / "out"
    cfg = int8_config(out, data, calibration="max", budgets=Int8Budgets(**LOOSE, lane_iou=1.0))
    return export_model(planted_model(), cfg)


def test_auto_calibration_tries_every_candidate_and_keeps_the_closest(data, tmp_path):
    cfg = int8_config(tmp_path / "out", data, budgets=Int8Budgets(**LOOSE, lane_iou=1.0))
    q = export_model(planted_model(), cfg).summary["int8"]
    trials = q["calibration_trials"]
    assert [t["calibration"] for t in trials] == [str(c) for c in AUTO_CANDIDATES]
    keys = list(trials[0]["disagreement"])
    mean = {k: np.mean([t["disagreement"][k] for t in trials]) for k in keys}
    for t in trials:  # each metric's disagreement over its mean across the candidates, summed
        assert t["relative"] == pytest.approx(
            sum(t["disagreement"][k] / mean[k] for k in keys), abs=1e-3
        )
        assert set(t["all_int8_deltas"]) == set(keys)
    (best,) = [t for t in trials if t["chosen"]]
    pool = [t for t in trials if t["within_budget"]] or trials  # no search needed wins
    assert best["relative"] == min(t["relative"] for t in pool)
    assert best["calibration"].split()[0] == q["calibration"] and q["calibration_asked"] == "auto"


def test_the_guard_keeps_the_planted_layer_out_of_int8(planted_export):
    q = planted_export.summary["int8"]
    groups = [f["group"] for f in q["fallback"]]
    assert PLANTED in groups
    assert q["all_int8_deltas"]["lane_iou"] < -1.0  # the planted layer breaks the lane in INT8
    assert q["deltas"]["lane_iou"] >= -1.0  # ... and the guard repairs it
    assert "lane_iou" in next(f["reason"] for f in q["fallback"] if f["group"] == PLANTED)
    assert any(s["action"] == "sensitivity" and s["group"] == PLANTED for s in q["search"])
    assert 0.5 < q["quantized_flops_share"] < 1.0 and q["quantized_layers"] < q["convs"]


def test_int8_artifact_sidecar_and_summary_agree(planted_export):
    path = planted_export.artifact("onnx_int8")
    assert path is not None and path.name.endswith("_int8.onnx")
    sc = read_sidecar(path)
    q = planted_export.summary["int8"]
    assert sc.precision == "int8" and sc.int8 is not None
    assert sc.int8.calibration == "max" and sc.int8.calib_images == 6
    assert "/model/model.39/conv/Conv" in sc.int8.fallback
    assert len(sc.int8.fallback_reasons) == len(sc.int8.fallback)
    assert dict(sc.int8.deltas) == pytest.approx(q["deltas"], abs=1e-3)
    assert sc.int8.quantized_flops_share == pytest.approx(q["quantized_flops_share"])
    assert planted_export.summary["lint"]["int8"]["ok"]


def test_mtc_eval_scores_the_int8_onnx_as_the_guard_did(planted_export, data, tmp_path, capsys):
    from compressor.cli.evaluate import main as eval_main

    path = planted_export.artifact("onnx_int8")
    out = tmp_path / "e.json"
    assert eval_main([str(path), "--data", str(data), "--no-progress", "--out", str(out)]) == 0
    rep = json.loads(out.read_text())
    guard = planted_export.summary["int8"]["scores"]["int8"]
    for k, v in guard.items():
        assert rep["summary"][k] == pytest.approx(v, abs=1e-9), k
    assert rep["artifact"]["precision"] == "int8" and rep["artifact"]["int8"]["fallback"]


def test_a_budget_fp16_already_misses_keeps_fp16_and_fails(data, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["--engine", "none", "--max-batch", "2", "--no-progress", "-o", str(out)]
    args += [
        "--fp16-min-mask-agreement",
        "90",
        "--fp16-min-iou",
        "0.3",
        "--fp16-max-score-delta",
        "1",
    ]
    args += ["--int8", "--calib-data", str(data), "--calib-images", "6", "--calib-batch", "2"]
    args += ["--int8-budget-drivable", "0", "--int8-budget-lane", "0"]
    ckpt = tmp_path / "student.pt"
    from compressor import save_checkpoint
    from compressor.checkpoint import default_preprocess

    save_checkpoint(ckpt, calibrated_tiny_yolop(), preprocess=default_preprocess(IMGSZ))
    assert export_main([str(ckpt), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "even with every layer in FP16" in err[0]
    names = {p.name for p in out.iterdir()}
    assert {"student.onnx", "student_fp16.onnx", "export_summary.json"} <= names
    assert not any("int8" in n for n in names)


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "--int8 needs calibration images"),
        (["--calib-data", "MISSING"], "does not exist"),
        (
            ["--calib-data", "DATA", "--calib-images", "4", "--calib-batch", "8"],
            "must be >= --calib-batch",
        ),
        (
            ["--calib-data", "DATA", "--calib-images", "16", "--calib-batch", "8"],
            "fewer than the calibration batch 8",
        ),
        (["--calib-data", "NHWC", "--no-guard", "--calibration", "max"], "holds NHWC images"),
        (["--calib-data", "DATA", "--no-guard"], "--calibration auto picks the method"),
        (["--calib-data", "SMALL", "--guard-data", "DATA"], "the model takes (N, 3, 64, 128)"),
        (["--calib-data", "SMALL"], "--no-guard"),
        (["--calib-data", "DATA", "--calibration", "kl"], "invalid choice"),
        (["--calib-data", "DATA", "--int8-budget-lane", "-1"], "must be >= 0"),
    ],
)
def test_bad_int8_input_is_one_line_before_the_work(
    extra, message, tiny_ckpt, data, tmp_path, capsys
):
    np.save(tmp_path / "nhwc.npy", np.zeros((4, *IMGSZ, 3), np.float32))
    np.save(tmp_path / "small.npy", np.zeros((4, 3, 32, 32), np.float32))
    swap = {
        "DATA": str(data),
        "MISSING": str(tmp_path / "nope"),
        "NHWC": str(tmp_path / "nhwc.npy"),
    }
    swap["SMALL"] = str(tmp_path / "small.npy")
    extra = [swap.get(a, a) for a in extra]
    out = tmp_path / "out"
    code = export_main([str(tiny_ckpt), "--engine", "none", "-o", str(out), "--int8", *extra])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and not any("Traceback" in line for line in err)
    assert not out.exists() or not any(out.iterdir())  # nothing written


def test_int8_options_refuse_what_cannot_work():
    with pytest.raises(ExportConfigError, match="--calib-data"):
        Int8Options(enabled=True)
    with pytest.raises(ExportConfigError, match="percentile"):
        Int8Options(enabled=True, calib_data="d", percentile=0)
    assert Int8Options(calib_data=None).enabled is False  # off: nothing is checked
