from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest

from runtime.latency import (
    CameraInfo,
    LatencyRecorder,
    LatencyReport,
    RunInfo,
    StageStats,
    latency_verdict,
    throughput_verdict,
)

HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


def info(batch: int = 1, fps: float = 30.0, wall_s: float = 0.5, **kw) -> RunInfo:
    return RunInfo(
        "m.onnx",
        "onnxruntime",
        "cpu",
        "fp32",
        batch,
        fps,
        2,
        "n/a",
        "n/a",
        measured_wall_s=wall_s,
        **kw,
    )


def test_stats_match_numpy():
    v = np.random.default_rng(0).gamma(2.0, 3.0, 997)
    s = StageStats.of(v)
    assert (s.count, s.min, s.max) == (997, v.min(), v.max())
    assert s.mean == pytest.approx(v.mean())
    for q in (50, 90, 95, 99):
        assert getattr(s, f"p{q}") == pytest.approx(np.percentile(v, q))


def test_batch_times_count_once_per_frame_and_throughput():
    rec = LatencyRecorder()
    rec.add([0, 1, 2, 3], {"preprocess": 1.0, "infer": 6.0, "postprocess": 1.0, "end_to_end": 8.0})
    rec.add([4], {"preprocess": 0.5, "infer": 3.0, "postprocess": 0.5, "end_to_end": 4.0})
    assert rec.per_frame("end_to_end").tolist() == [8.0] * 4 + [4.0]
    assert rec.compute_fps() == pytest.approx(5 / 0.012)
    assert "h2d" not in rec.stage_stats()  # not measured -> not reported as zero


def test_verdicts():
    budget = 1000 / 30
    assert latency_verdict(budget, 1, 30).passed is True  # <= is a pass
    assert latency_verdict(budget + 0.01, 1, 30).passed is False
    v = latency_verdict(5.0, 4, 30)
    assert v.passed is None and "batch 4" in v.reason
    assert latency_verdict(None, 1, 30).passed is None
    assert throughput_verdict(30.0, 30).passed is True
    assert throughput_verdict(29.9, 30).passed is False


def test_report_files_and_verdict_in_them(tmp_path):
    rec = LatencyRecorder()
    for i in range(20):
        rec.add([i], {"preprocess": 1.0, "infer": 10.0, "postprocess": 1.0, "end_to_end": 12.0 + i})
    report = LatencyReport.build(info(), rec)
    files = report.write(tmp_path / "lat.json")
    png = [".png"] if HAS_MATPLOTLIB else []  # without it: skipped with a note (test below)
    assert [f.suffix for f in files] == [".json", ".md", *png]
    data = json.loads(files[0].read_text())
    assert data["verdicts"][0]["passed"] is True and data["verdicts"][1]["passed"] is True
    assert data["stages_ms"]["end_to_end"]["max"] == 31.0 and len(data["timeline_ms"]) == 20
    assert "| end_to_end |" in files[1].read_text()
    slow = LatencyReport.build(info(fps=60), rec)  # budget 16.7 ms; p99 ~30.8 ms
    assert slow.verdicts[0].passed is False and "FAIL" in slow.table()


def test_missing_matplotlib_skips_the_png_with_a_note(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    rec = LatencyRecorder()
    rec.add([0], {"end_to_end": 1.0})
    report = LatencyReport.build(info(), rec)
    files = report.write(tmp_path / "lat.json")
    assert [f.suffix for f in files] == [".json", ".md"] and not (tmp_path / "lat.png").exists()
    assert "matplotlib is not installed" in json.loads(files[0].read_text())["notes"][0]


def _timeline(overlap: bool) -> tuple[RunInfo, LatencyRecorder]:
    """A synthetic run: 3 batches of 2 frames, each 10 ms of preprocess + infer + postprocess,
    inside a measured stream of 0.2 s (reading, drawing and encoding took the rest)."""
    rec = LatencyRecorder()
    for b in range(3):
        e2e = {"preprocess": 2.0, "infer": 7.0, "postprocess": 1.0, "end_to_end": 10.0}
        rec.add([2 * b, 2 * b + 1], e2e, {"capture_to_result": [30.0, 40.0]})
    return info(batch=2, wall_s=0.2, overlap=overlap), rec


@pytest.mark.parametrize("overlap", [False, True])
def test_one_frame_rate_frames_over_wall_in_every_mode(overlap):
    run_info, rec = _timeline(overlap)
    report = LatencyReport.build(run_info, rec)
    assert report.throughput_fps == pytest.approx(6 / 0.2)  # 30 fps: the wall clock
    assert report.compute_fps == pytest.approx(6 / 0.030)  # 200 fps: summed end_to_end
    tv = report.verdicts[1]
    assert tv.measured == pytest.approx(30.0) and tv.passed is True  # target 30, by the wall
    data = report.to_dict()
    assert data["throughput_fps"] == pytest.approx(30.0) and "wall_fps" not in data
    assert data["compute_fps"] == pytest.approx(200.0)
    src = data["sources"]
    assert len(src) == 1 and src[0]["frames"] == 6 and src[0]["p50_ms"] == pytest.approx(35.0)
    assert "30.0 fps (frames / wall time" in report.table()
    assert "Throughput: 30.0 fps (frames / wall time" in report.to_markdown()


def test_compute_fps_alone_cannot_pass_the_verdict():
    run_info, rec = _timeline(False)
    run_info.measured_wall_s = 1.0  # 6 fps by the wall, 200 fps by the summed stages
    report = LatencyReport.build(run_info, rec)
    assert report.verdicts[1].passed is False and report.verdicts[1].measured == pytest.approx(6)


def test_every_camera_is_held_to_the_target():
    rec = LatencyRecorder()
    for b in range(10):  # camera 1 misses every other batch
        cams = [0, 1] if b % 2 == 0 else [0]
        rec.add(
            [b] * len(cams), {"end_to_end": 5.0}, {"capture_to_result": [20.0] * len(cams)}, cams
        )
    cameras = [
        CameraInfo("video: a.mp4", 10, 0, 0, 0, "end of video", [[720, 1280]]),
        CameraInfo("video: b.mp4", 5, 0, 5, 0, "end of video", [[480, 640]]),
    ]
    report = LatencyReport.build(info(batch=2, fps=30, wall_s=0.25, cameras=cameras), rec)
    assert report.throughput_fps == pytest.approx(15 / 0.25)  # 60 fps overall
    a, b = report.sources
    assert (a["frames"], b["frames"], b["missed"]) == (10, 5, 5)
    assert a["fps"] == pytest.approx(40.0) and b["fps"] == pytest.approx(20.0)
    tv = report.verdicts[1]
    assert tv.passed is False and tv.measured == pytest.approx(20.0) and "b.mp4" in tv.reason
    assert any("different frame sizes" in n for n in report.notes)
    assert "| 1 | video: b.mp4 | 5 |" in report.to_markdown()
