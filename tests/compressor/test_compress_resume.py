"""mtc-compress --resume continues a killed run from its train/last.pt (no re-pruning), and a
folder holding a killed run's files is refused unless --resume or --overwrite."""

from __future__ import annotations

import json

import pytest
import torch

from compressor import build_model, load_checkpoint, save_checkpoint
from compressor.checkpoint import default_preprocess
from compressor.cli.compress import main
from compressor.train import loop

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    save_checkpoint(
        path, build_model("yolop", width=0.25, depth=0.33), preprocess=default_preprocess((64, 128))
    )
    return path


def _args(teacher, data, out, *extra):
    return [
        *("--teacher", str(teacher), "--data", str(data), "-o", str(out)),
        *("--imgsz", "64", "128", "--calib-batches", "1", "--batch", "2", "--workers", "0"),
        *("--no-progress", "--max-train-images", "4", "--max-val-images", "2", "--epochs", "2"),
        *extra,
    ]


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    return err


def test_killed_compression_resumes_and_used_folders_are_refused(
    teacher_ckpt, synth_dataset, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "c"
    original = loop.Trainer._end_epoch

    def killed_after_first_epoch(self, *a, **k):
        original(self, *a, **k)
        raise KeyboardInterrupt

    monkeypatch.setattr(loop.Trainer, "_end_epoch", killed_after_first_epoch)
    assert main(_args(teacher_ckpt, synth_dataset, out)) == 130
    capsys.readouterr()
    monkeypatch.setattr(loop.Trainer, "_end_epoch", original)
    assert (out / "train" / "last.pt").is_file() and not (out / "student.pt").exists()
    record = load_checkpoint(out / "train" / "last.pt")[1].pruning

    # a plain re-run neither resumes silently nor mixes runs
    assert main(_args(teacher_ckpt, synth_dataset, out)) == 2
    assert "unfinished compression" in _one_line(capsys)
    # a resume with other settings is refused
    assert main(_args(teacher_ckpt, synth_dataset, out, "--ratio", "0.2", "--resume")) == 2
    assert "other settings" in _one_line(capsys)

    assert main(_args(teacher_ckpt, synth_dataset, out, "--resume")) == 0
    capsys.readouterr()
    _, last = load_checkpoint(out / "train" / "last.pt")
    assert last.train_state["progress"]["epoch"] == 2
    assert len(last.train_state["progress"]["history"]) == 2  # epoch 1 kept, epoch 2 added
    _, student = load_checkpoint(out / "student.pt")
    assert student.pruning == record  # the killed run's pruning, not a new one
    report = json.loads((out / "report.json").read_text())
    assert report["params_reduction"] > 0

    assert main(_args(teacher_ckpt, synth_dataset, out, "--resume")) == 2
    assert "nothing to resume" in _one_line(capsys)


def test_overwrite_removes_the_old_runs_files(teacher_ckpt, synth_dataset, tmp_path, capsys):
    out = tmp_path / "c"
    (out / "step7").mkdir(parents=True)
    (out / "step7" / "last.pt").write_bytes(b"old")
    (out / "report.md").write_text("old report")
    (out / "notes.txt").write_text("the user's own file")
    assert main(_args(teacher_ckpt, synth_dataset, out, "--epochs", "0")) == 2
    assert "--overwrite" in _one_line(capsys)
    steps = ["--epochs", "0", "--iterative-steps", "2", "--step-epochs", "1", "--overwrite"]
    assert main(_args(teacher_ckpt, synth_dataset, out, *steps)) == 0
    assert not (out / "step7").exists()
    # this run's own fine-tunes between pruning steps are kept
    assert sorted(p.parent.name for p in out.glob("step*/last.pt"))
    assert (out / "notes.txt").read_text() == "the user's own file"
    assert (out / "report.md").read_text() != "old report"
