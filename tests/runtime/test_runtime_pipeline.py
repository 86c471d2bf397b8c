from __future__ import annotations

import importlib.util
import json

import cv2
import numpy as np
import pytest
from runtime_helpers import make_artifact, split_frame

from runtime import load_artifact, run
from runtime.geometry import boxes_from_letterbox, letterbox_params
from runtime.pipeline import RunConfig, RunConfigError, RunInterrupted
from runtime.testing import StandinConfig, standin_candidates


def test_end_to_end_with_a_short_last_batch(tmp_path):
    art = make_artifact(tmp_path)
    frames = [(f"f{i}", split_frame()) for i in range(5)]
    res = run(art, frames, batch=2, warmup=1, progress=False, report=str(tmp_path / "r/lat.json"))
    assert [r.frame_id for r in res.results] == ["f0", "f1", "f2", "f3", "f4"]
    assert [row["batch_size"] for row in res.report.timeline] == [2, 2, 2, 2, 1]
    r = res.results[4]
    assert r.drivable.shape == (48, 80) and r.lane.shape == (48, 80)
    assert r.drivable[:, :40].all() and not r.drivable[:, 40:].any()
    # NMS (conf 0.25, iou 0.45): of the 4 known candidates, 0.9 and 0.7 survive
    np.testing.assert_allclose(r.scores, [0.9, 0.7], rtol=1e-6)
    lb = letterbox_params((48, 80), (32, 64))
    expect = boxes_from_letterbox(standin_candidates(StandinConfig())[[0, 2], :4], lb)
    np.testing.assert_allclose(r.boxes, expect, rtol=1e-5)
    assert {"preprocess", "compute", "infer", "postprocess", "end_to_end"} <= set(r.timing)
    assert res.report.info.stop_reason == "end of input" and res.report.info.frames_processed == 5
    saved = json.loads((tmp_path / "r/lat.json").read_text())
    assert saved["frames_measured"] == 5 and saved["info"]["batch"] == 2
    assert (tmp_path / "r/lat.md").exists()
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "r/lat.png").stat().st_size > 1000


def test_frame_size_change_mid_stream(tmp_path):
    art = make_artifact(tmp_path)
    frames = [split_frame(48, 80), split_frame(100, 60), split_frame(30, 200)]
    res = run(art, frames, batch=2, progress=False)
    assert [r.drivable.shape for r in res.results] == [(48, 80), (100, 60), (30, 200)]
    for r, (h, w) in zip(res.results, [(48, 80), (100, 60), (30, 200)]):
        assert r.drivable[:, : w // 2 - 1].all() and not r.drivable[:, w // 2 + 1 :].any()
        assert (r.boxes[:, [0, 2]] <= w).all() and (r.boxes[:, [1, 3]] <= h).all()


def test_variants_agree_fixed_batch_nms_in_graph_and_logits(tmp_path):
    frames = [split_frame(), split_frame(60, 60, 90), split_frame()]
    base = run(make_artifact(tmp_path, "a.onnx"), frames, batch=2, progress=False).results
    for name, kw in [
        ("fixed.onnx", {"fixed_batch": 2}),
        ("nms.onnx", {"nms_in_graph": True}),
        ("logits.onnx", {"seg_output": "logits"}),
    ]:
        got = run(make_artifact(tmp_path, name, **kw), frames, batch=2, progress=False).results
        for a, b in zip(base, got):
            np.testing.assert_allclose(a.boxes, b.boxes, rtol=1e-5, err_msg=name)
            np.testing.assert_array_equal(a.drivable, b.drivable, err_msg=name)
            np.testing.assert_array_equal(a.lane, b.lane, err_msg=name)


def test_warmup_batches_run_but_are_not_measured(tmp_path):
    with load_artifact(make_artifact(tmp_path)) as be:
        calls = []
        original = be.infer
        be.infer = lambda batch: calls.append(len(batch)) or original(batch)  # type: ignore[method-assign]
        res = run(be, [split_frame()] * 3, batch=1, warmup=3, progress=False)
    assert calls == [1] * 6  # 3 warm-up + 3 measured
    assert res.report.frames_measured == 3


def test_overlays_to_a_folder_and_to_mp4(tmp_path):
    art = make_artifact(tmp_path)
    frames = [split_frame(96, 160) for _ in range(3)]
    res = run(art, frames, progress=False, save=str(tmp_path / "vis"))
    files = sorted((tmp_path / "vis").iterdir())
    assert [f.name for f in files] == ["000000.jpg", "000001.jpg", "000002.jpg"]
    img = cv2.imread(str(files[0]))
    assert img.shape == (96, 160, 3)
    assert np.abs(img.astype(int) - frames[0]).mean() > 5  # masks and boxes changed the picture
    run(art, frames, progress=False, save=str(tmp_path / "vis.mp4"))
    cap = cv2.VideoCapture(str(tmp_path / "vis.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    assert res.overlays == tmp_path / "vis"


def test_ctrl_c_keeps_a_partial_report(tmp_path):
    def frames():
        for i in range(10):
            if i == 3:
                raise KeyboardInterrupt
            yield split_frame()

    with pytest.raises(RunInterrupted) as e:
        run(make_artifact(tmp_path), frames(), progress=False, report=str(tmp_path / "lat.json"))
    assert len(e.value.result.results) == 3
    saved = json.loads((tmp_path / "lat.json").read_text())
    assert saved["info"]["stop_reason"] == "interrupted (Ctrl-C)" and saved["frames_measured"] == 3


def test_max_frames_and_config_errors(tmp_path):
    art = make_artifact(tmp_path)
    res = run(art, [split_frame()] * 5, max_frames=2, progress=False, warmup=0)
    assert len(res.results) == 2 and "max-frames 2" in res.report.info.stop_reason
    with pytest.raises(RunConfigError, match="unknown run option 'batch_size'"):
        run(art, [split_frame()], batch_size=2)
    with pytest.raises(RunConfigError, match="batch must be >= 1"):
        RunConfig(batch=0)
    fixed = make_artifact(tmp_path, "fixed.onnx", fixed_batch=2)
    with pytest.raises(RunConfigError, match="--batch 4 exceeds"):
        run(fixed, [split_frame()], batch=4, progress=False)
