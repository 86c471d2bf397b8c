from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest

from runtime.latency import (
    LatencyRecorder,
    LatencyReport,
    RunInfo,
    StageStats,
    latency_verdict,
    throughput_verdict,
)

HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


def info(batch: int = 1, fps: float = 30.0) -> RunInfo:
    return RunInfo("m.onnx", "onnxruntime", "cpu", "fp32", batch, fps, 2, "n/a", "n/a")


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
    assert rec.throughput_fps() == pytest.approx(5 / 0.012)
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
