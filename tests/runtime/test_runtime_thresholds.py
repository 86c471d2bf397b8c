"""Deploy thresholds: in the sidecar apart from the evaluation ones, applied by run() / mtc-run,
overridable, validated; old sidecars without the block still load (one warning)."""

from __future__ import annotations

import json
import re
import warnings

import cv2
import numpy as np
import pytest
from runtime_helpers import make_artifact, split_frame

from runtime import run
from runtime.cli import main
from runtime.pipeline import RunConfig, RunConfigError
from runtime.sidecar import (
    DeployThresholds,
    SidecarDefaultsWarning,
    SidecarError,
    read_sidecar,
    sidecar_path,
)
from runtime.spec import DEPLOY_CONF, DEPLOY_IOU, DEPLOY_MAX_DET, DEPLOY_TOPK, NMS_CONF


def _edit(artifact, change):
    path = sidecar_path(artifact)
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_sidecar_carries_deploy_and_evaluation_thresholds(tmp_path):
    art = make_artifact(tmp_path, conf_thres=NMS_CONF, iou_thres=0.6, max_det=8)
    data = json.loads(sidecar_path(art).read_text())
    assert data["det"]["deploy"] == {
        "conf_thres": DEPLOY_CONF,
        "iou_thres": DEPLOY_IOU,
        "max_det": DEPLOY_MAX_DET,
        "topk": DEPLOY_TOPK,
    }
    assert (DEPLOY_CONF, DEPLOY_IOU, DEPLOY_MAX_DET, DEPLOY_TOPK) == (0.25, 0.45, 100, 1000)
    sc = read_sidecar(art)
    assert sc.det.conf_thres == NMS_CONF and sc.det.deploy.conf_thres == 0.25


def test_old_sidecar_without_deploy_block_loads_with_one_warning(tmp_path):
    art = make_artifact(tmp_path)
    _edit(art, lambda d: d["det"].pop("deploy"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sc = read_sidecar(art)
    ours = [w for w in caught if issubclass(w.category, SidecarDefaultsWarning)]
    assert len(ours) == 1
    assert "'det.deploy'" in str(ours[0].message) and "conf 0.25" in str(ours[0].message)
    assert sc.det.deploy == DeployThresholds()


@pytest.mark.parametrize(
    ("key", "value", "rule"),
    [("conf_thres", 0.0, "in (0, 1]"), ("iou_thres", 1.5, "in (0, 1]"), ("max_det", 0, ">= 1")],
)
def test_bad_deploy_block_names_the_key(tmp_path, key, value, rule):
    art = make_artifact(tmp_path)
    _edit(art, lambda d: d["det"]["deploy"].update({key: value}))
    with pytest.raises(SidecarError, match=rf"det\.deploy\.{key} must be {re.escape(rule)}"):
        read_sidecar(art)


def test_run_applies_deploy_thresholds_and_overrides(tmp_path):
    # Stand-in candidates: 0.9 and 0.8 overlap (IoU ~0.8), 0.7 apart, 1e-4 below anything.
    art = make_artifact(tmp_path, conf_thres=NMS_CONF, max_det=8)
    frames = [split_frame()]
    default = run(art, frames, progress=False, warmup=0).results[0]
    np.testing.assert_allclose(default.scores, [0.9, 0.7], rtol=1e-6)  # deploy conf 0.25
    strict = run(art, frames, progress=False, warmup=0, conf=0.75).results[0]
    np.testing.assert_allclose(strict.scores, [0.9], rtol=1e-6)
    loose_iou = run(art, frames, progress=False, warmup=0, iou=0.95).results[0]
    np.testing.assert_allclose(loose_iou.scores[:3], [0.9, 0.8, 0.7], rtol=1e-6)
    one = run(art, frames, progress=False, warmup=0, max_det=1, report=None)
    assert len(one.results[0].scores) == 1
    assert one.report.info.thresholds == {
        "conf_thres": 0.25,
        "iou_thres": 0.45,
        "max_det": 1,
        "topk": 1000,
    }


@pytest.mark.parametrize(
    ("kw", "msg"),
    [
        ({"conf": 0.0}, "conf must be in (0, 1] (--conf in mtc-run), got 0.0"),
        ({"conf": 1.01}, "conf must be in (0, 1]"),
        ({"iou": -0.1}, "iou must be in (0, 1]"),
        ({"max_det": 0}, "max_det must be >= 1 (--max-det in mtc-run), got 0"),
        ({"topk": 0}, "topk must be >= 1"),
        ({"stall_timeout": 0}, "stall_timeout must be > 0 seconds"),
        ({"queue_depth": 0}, "queue_depth must be >= 1"),
    ],
)
def test_run_config_rejects_out_of_range_values(kw, msg):
    with pytest.raises(RunConfigError) as e:
        RunConfig(**kw)
    assert msg in str(e.value)


def _folder(tmp_path, n=2):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(n):
        cv2.imwrite(str(folder / f"{i:03d}.png"), split_frame())
    return folder


@pytest.mark.parametrize(
    ("flags", "expect"),
    [
        (["--conf", "0"], "conf must be in (0, 1] (--conf in mtc-run), got 0.0"),
        (["--conf", "1.5"], "got 1.5"),
        (["--iou", "0"], "iou must be in (0, 1]"),
        (["--iou", "2"], "iou must be in (0, 1]"),
        (["--max-det", "0"], "max_det must be >= 1"),
        (["--batch", "9"], "exceeds the maximum batch of model.onnx (8, from its sidecar"),
    ],
)
def test_cli_bad_thresholds_and_batch_are_one_line_exit_2(tmp_path, capsys, flags, expect):
    art = make_artifact(tmp_path)  # dynamic batch ONNX; sidecar batch.max = 8
    args = [str(art), "--source", str(_folder(tmp_path)), "--report", str(tmp_path / "r.json")]
    assert main([*args, *flags, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and expect in err
    if flags[0] == "--batch":
        assert "--batch 8" in err  # the fix, with the maximum named


def test_cli_conf_override_reaches_the_report(tmp_path, capsys):
    art = make_artifact(tmp_path)
    report = tmp_path / "r.json"
    args = [str(art), "--source", str(_folder(tmp_path)), "--report", str(report), "--quiet"]
    assert main([*args, "--conf", "0.5", "--iou", "0.3", "--max-det", "7", "--topk", "50"]) == 0
    info = json.loads(report.read_text())["info"]
    assert info["thresholds"] == {"conf_thres": 0.5, "iou_thres": 0.3, "max_det": 7, "topk": 50}
    assert info["overlap"] is True
    assert main([*args, "--no-overlap"]) == 0
    assert json.loads(report.read_text())["info"]["overlap"] is False
