from __future__ import annotations

import json

import cv2
from runtime_helpers import make_artifact, split_frame

from runtime import postprocess
from runtime.cli import main


def _images(tmp_path, n=3):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(n):
        cv2.imwrite(str(folder / f"{i:03d}.png"), split_frame())
    return folder


def test_missing_artifact_is_one_line_exit_2(tmp_path, capsys):
    assert main([str(tmp_path / "nope.onnx"), "--source", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: artifact") and "mtc-export" in err


def test_bad_flag_value_is_one_line_exit_2(capsys):
    assert main(["m.onnx", "--source", "0", "--batch", "four"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: argument --batch")


def test_run_writes_report_and_overlays(tmp_path, capsys):
    art = make_artifact(tmp_path)
    report = tmp_path / "out" / "latency.json"
    code = main(
        [
            str(art),
            "--source",
            str(_images(tmp_path)),
            "--batch",
            "2",
            "--warmup",
            "1",
            "--report",
            str(report),
            "--save",
            str(tmp_path / "vis.mp4"),
            "--quiet",
        ]
    )
    assert code == 0
    data = json.loads(report.read_text())
    assert data["info"]["frames_processed"] == 3 and data["info"]["stop_reason"] == "end of images"
    assert report.with_suffix(".md").exists() and (tmp_path / "vis.mp4").stat().st_size > 0
    out = capsys.readouterr().out
    assert "end_to_end" not in out and f"wrote {report}" in out  # --quiet: no table


def test_hash_mismatch_then_no_verify_hash(tmp_path, capsys):
    art = make_artifact(tmp_path)
    (tmp_path / "other").mkdir()
    art.write_bytes(make_artifact(tmp_path / "other", seed=7).read_bytes())  # rebuilt, valid ONNX
    args = [str(art), "--source", str(_images(tmp_path, 1)), "--report", str(tmp_path / "r.json")]
    assert main(args) == 2
    assert "--no-verify-hash" in capsys.readouterr().err
    assert main([*args, "--no-verify-hash"]) == 0
    assert "throughput" in capsys.readouterr().out


def test_ctrl_c_exits_130_with_partial_report(tmp_path, monkeypatch, capsys):
    calls = []
    original = postprocess.Postprocessor.__call__

    def interrupting(self, *a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, *a, **k)

    monkeypatch.setattr(postprocess.Postprocessor, "__call__", interrupting)
    report = tmp_path / "r.json"
    art = make_artifact(tmp_path)
    code = main(
        [
            str(art),
            "--source",
            str(_images(tmp_path, 5)),
            "--warmup",
            "0",
            "--report",
            str(report),
            "--quiet",
        ]
    )
    assert code == 130
    data = json.loads(report.read_text())
    assert data["info"]["stop_reason"] == "interrupted (Ctrl-C)" and data["frames_measured"] == 2


def test_overlays_into_the_source_folder_or_a_non_json_report_are_refused(tmp_path, capsys):
    art = make_artifact(tmp_path)
    frames = _images(tmp_path, 2)
    before = {p.name: p.read_bytes() for p in frames.iterdir()}
    for extra in (
        ["--save", str(frames), "--report", str(tmp_path / "r.json")],
        ["--save", str(frames) + "/", "--report", str(tmp_path / "r.json")],
        ["--report", str(frames / sorted(before)[0])],
    ):
        assert main([str(art), "--source", str(frames), "--quiet", *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: --"), err
    assert {p.name: p.read_bytes() for p in frames.iterdir()} == before
    assert not (tmp_path / "r.json").exists()
