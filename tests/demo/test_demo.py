"""The main job end to end (slow) and its option checks (fast)."""

from __future__ import annotations

import json

import pytest

from demo.cli import main
from demo.run import DemoConfig, DemoConfigError, run_demo


def test_bad_options_fail_before_any_work(tmp_path):
    with pytest.raises(DemoConfigError, match=r"ratio must be in \(0, 1\) \(got 1.5\)"):
        DemoConfig(out=str(tmp_path), ratio=1.5)
    with pytest.raises(
        DemoConfigError,
        match=r"imgsz 100x320 \(HxW\) breaks model 'yolop''s stride rule.*nearest valid size: 96 320",
    ):
        DemoConfig(imgsz=(100, 320))
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--ratio", "0", "ratio must be in (0, 1) (got 0.0)"),
        ("--max-group-ratio", "0", "max_group_ratio must be in (0, 1] (got 0.0)"),
        ("--kd-weight", "-1", "kd_weight must be >= 0 (got -1.0)"),
        ("--round-to", "0", "round_to must be >= 1, 'auto' or None (got 0)"),
    ],
)
def test_cli_reports_user_errors_in_one_line(capsys, tmp_path, flag, value, message):
    with pytest.raises(SystemExit) as e:
        main(["--out", str(tmp_path / "o"), flag, value])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: bad demo option: {message}"]


def test_real_data_settings_follow_the_protocol():
    cfg = DemoConfig.real("/data/bdd100k")
    assert cfg.imgsz == (384, 640) and cfg.width == 1.0 and cfg.depth == 1.0


def tiny_demo(tmp_path, **overrides) -> DemoConfig:
    """The whole demo in a minute or two: 16 + 8 images at 96x160, one epoch each stage."""
    kw = dict(
        out=str(tmp_path / "demo"),
        n_train=16,
        n_val=8,
        teacher_epochs=1,
        distill_epochs=1,
        imgsz=(96, 160),
        runtime_frames=8,
        calib_batches=2,
        batch=4,
        progress=False,
        workers=0,
        engine="none",
        latency_cache=str(tmp_path / "cache"),  # not the machine's cache
    )
    return DemoConfig(**{**kw, **overrides})


@pytest.mark.slow
def test_demo_end_to_end_tiny(tmp_path):
    cfg = tiny_demo(tmp_path)
    res = run_demo(cfg, log=lambda _m: None)
    data = json.loads(res.report_json.read_text())
    # the default target is latency: the plan removes 30 % of the predicted latency, whatever
    # that costs in parameters; teacher and student are timed side by side
    assert data["settings"]["target"] == "latency" and data["size"]["param_reduction"] > 0.05
    assert data["size"]["student_params"] < data["size"]["teacher_params"]
    side = data["latency_side_by_side"]
    assert side["measured"]["speedup"] > 0 and side["predicted"]["predicted_after_ms"] > 0
    kinds = {(r["model"], r["artifact_kind"], r["batch"]) for r in data["latency"]}
    assert ("student", "onnx", 4) in kinds and ("teacher", "onnx_fp16", 1) in kinds
    names = {a["name"] for a in data["artifacts"]}
    assert {"teacher.onnx", "student.onnx", "student_fp16.onnx"} <= names
    md = res.report_md.read_text()
    assert "| parameters |" in md and "det mAP@0.5" in md and "overlays/overlay_000.jpg" in md
    dep = data["deployed"]  # the student's FP32 / FP16 / INT8 exports scored by the guard
    assert "error" in dep or {"fp32", "fp16", "int8"} <= set(dep["scores"])
    assert "## Deployed student" in md
    fh, fw = data["size"]["flops_input_hw"]  # the size FLOPs were counted at, not the input's
    assert f"| GFLOPs @ {fw}x{fh} |" in md
    for png in ("metrics.png", "latency.png", "overlays/overlay_000.jpg"):
        assert (res.out / png).stat().st_size > 1000


def test_demo_model_option_reads_the_spec():
    cfg = DemoConfig(model="twinlitenet", imgsz=(184, 320))  # stride 8: 184 is fine
    assert cfg.arch() == {}  # TwinLiteNet's builder takes no width/depth
    assert DemoConfig().arch() == {"width": 0.75, "depth": 0.33}
    with pytest.raises(DemoConfigError, match="nearest valid size: 184 320"):
        DemoConfig(model="twinlitenet", imgsz=(182, 320))
    with pytest.raises(DemoConfigError, match="no spec for model 'twinlite'.*'twinlitenet'"):
        DemoConfig(model="twinlite")


@pytest.mark.slow
def test_demo_twinlitenet_end_to_end_tiny(tmp_path):
    # TwinLiteNet's groups are 8-32 channels wide: on steps (and a minimum) of 16 channels at
    # most 31 % of its latency can go at 96x160, so it plans on steps of 8
    cfg = tiny_demo(
        tmp_path, model="twinlitenet", runtime_frames=4, runtime_batches=(1,), round_to=8
    )
    res = run_demo(cfg, log=lambda _m: None)
    data = json.loads(res.report_json.read_text())
    assert data["size"]["student_params"] < data["size"]["teacher_params"] == 439633
    assert "det_map50" not in data["metrics"]["teacher"]
    md = res.report_md.read_text()
    assert "drivable mIoU" in md and "det mAP" not in md and "boxes max" not in md
    assert (res.out / "overlays" / "overlay_000.jpg").stat().st_size > 1000


def test_deployed_table_shows_each_export_its_delta_and_the_fallback():
    from demo.report import deployed_table

    q = {
        "scores": {
            "fp32": {"det_recall": 0.80, "lane_iou": 0.40},
            "fp16": {"det_recall": 0.80, "lane_iou": 0.399},
            "int8": {"det_recall": 0.795, "lane_iou": 0.392},
        },
        "budgets_points": {"det_recall": 1.0, "lane_iou": 1.0},
        "guard_source": "d (val, 8 images)",
        "calibration": "percentile",
        "calib_images": 16,
        "calib_source": "d (train)",
        "quantized_layers": 90,
        "convs": 94,
        "quantized_conv_share": 0.957,
        "quantized_flops_share": 0.93,
        "fallback": [{"group": "model.39", "reason": "lane_iou over budget"}],
        "models_scored": 50,
        "time_s": 80.0,
    }
    text = "\n".join(deployed_table(q))
    assert "| det recall | 80.0 | 80.0 | 79.5 | +0.00 | -0.50 | -1.0 |" in text
    assert "| lane IoU | 40.0 | 39.9 | 39.2 | -0.10 | -0.80 | -1.0 |" in text
    assert "93% of conv FLOPs" in text and "`model.39` (lane_iou over budget)" in text
    assert deployed_table({"error": "no luck"})[2] == "INT8 not written: no luck"
    assert deployed_table(None) == []
