"""mtc-train: the happy path writes its files; user mistakes are one line and exit 2."""

from __future__ import annotations

import json

import pytest
import torch

from compressor import build_model, load_checkpoint, save_checkpoint
from compressor.checkpoint import CheckpointError
from compressor.cli.train import main
from compressor.train import TrainConfig, train

ARGS = [
    "--imgsz",
    "64",
    "128",
    "--width",
    "0.25",
    "--depth",
    "0.33",
    "--workers",
    "0",
    "--no-progress",
    "--max-train-images",
    "4",
    "--max-val-images",
    "2",
    "--batch",
    "2",
]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: torch on one thread


@pytest.fixture(scope="module")
def run_dir(synth_dataset, tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("cli") / "teacher"
    assert main(["--data", str(synth_dataset), "-o", str(out), "--epochs", "1", *ARGS]) == 0
    return out


def test_writes_checkpoints_and_reports(run_dir, capsys):
    for name in ("last.pt", "best.pt", "metrics.json", "metrics.md"):
        assert (run_dir / name).is_file(), name
    report = json.loads((run_dir / "metrics.json").read_text())
    assert report["epochs_done"] == 1 and report["config"]["imgsz"] == [64, 128]
    assert report["final"]["protocol"]["lane_labels"] == "thin"
    model, ckpt = load_checkpoint(run_dir / "best.pt")
    assert ckpt.model_config["width"] == 0.25 and ckpt.preprocess["input_hw"] == [64, 128]
    assert ckpt.train_state is None  # best.pt is a deployable checkpoint
    assert "score" in ckpt.metrics
    assert "| epoch |" in (run_dir / "metrics.md").read_text()


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--batch", "50"], "batch 50 is larger than the 4 training images"),
        (["--imgsz", "60", "128"], "multiples of 32"),
        (["--optimizer", "sgd", "--lr", "-1"], "lr must be > 0"),
    ],
)
def test_bad_flags_are_one_line_errors(synth_dataset, tmp_path, capsys, extra, expected):
    argv = ["--data", str(synth_dataset), "-o", str(tmp_path), "--epochs", "1", *ARGS, *extra]
    assert main(argv) == 2
    assert expected in _error(capsys)


def test_empty_data_set_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["--data", str(tmp_path / "empty"), "-o", str(tmp_path / "o"), *ARGS]) == 2
    _error(capsys)


def test_corrupt_or_foreign_checkpoints_are_one_line_errors(
    synth_dataset, run_dir, tmp_path, capsys
):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    base = ["--data", str(synth_dataset), "-o", str(tmp_path / "o"), "--epochs", "1", *ARGS]
    assert main([*base, "--init", str(junk)]) == 2
    assert "is not a PyTorch checkpoint" in _error(capsys)
    assert main(["--resume", str(run_dir / "best.pt")]) == 2
    assert "no training state" in _error(capsys)
    assert main(["--resume", str(run_dir / "last.pt"), "--lr", "0.5"]) == 2
    assert "cannot change lr" in _error(capsys)
    assert main([*base, "--init", str(run_dir / "best.pt"), "--width", "0.5"]) == 2
    assert "width=0.5" in _error(capsys)
    assert main(["--data", str(synth_dataset), "-o", str(run_dir), *ARGS]) == 2
    assert "already holds a training run" in _error(capsys)


def test_checkpoint_of_another_architecture_into_a_given_model_raises(synth_dataset, tmp_path):
    other = tmp_path / "other.pt"
    save_checkpoint(other, build_model("yolop", width=0.25, depth=1.0))
    cfg = TrainConfig(
        data=str(synth_dataset),
        out=str(tmp_path / "o"),
        init=str(other),
        epochs=1,
        batch=2,
        imgsz=(64, 128),
        workers=0,
        progress=False,
    )
    with pytest.raises(CheckpointError, match="does not fit"):
        train(cfg, model=build_model("yolop", width=0.25, depth=0.33))


def test_lr_so_large_that_loss_diverges_exits_non_zero(synth_dataset, tmp_path, capsys):
    argv = [
        "--data",
        str(synth_dataset),
        "-o",
        str(tmp_path),
        "--epochs",
        "3",
        *ARGS,
        "--lr",
        "1e30",
        "--grad-clip",
        "0",
        "--warmup-epochs",
        "0",
        "--no-ema",
    ]
    assert main(argv) == 2
    assert "loss is not finite at step" in _error(capsys)


def test_run_cli_maps_user_errors_and_ctrl_c_to_exit_codes(capsys):
    from compressor.cli.common import run_cli
    from runtime.errors import MtcError

    def user_error(argv):
        raise MtcError("bad thing\nsecond line")

    def interrupted(argv):
        raise KeyboardInterrupt

    assert run_cli(user_error, []) == 2
    assert capsys.readouterr().err == "error: bad thing second line\n"
    assert run_cli(interrupted, []) == 130
    assert run_cli(lambda argv: None, []) == 0
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        run_cli(lambda argv: 1 / 0, [])


def _tree_digest(root) -> dict[str, str]:
    import hashlib

    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_resume_into_another_runs_folder_is_refused_and_writes_nothing(run_dir, tmp_path, capsys):
    """Regression (data loss): --resume A/last.pt -o B used to overwrite B's last.pt/metrics."""
    import shutil

    other = tmp_path / "other_run"
    shutil.copytree(run_dir, other)
    (other / "marker.txt").write_text("B's own file")
    before = _tree_digest(other)
    source_before = _tree_digest(run_dir)
    argv = ["--resume", str(run_dir / "last.pt"), "-o", str(other), "--epochs", "2"]
    assert main(argv) == 2
    err = _error(capsys)
    assert f"continues the run in {run_dir.resolve()}" in err and "--init" in err
    assert _tree_digest(other) == before
    assert _tree_digest(run_dir) == source_before
    fresh = tmp_path / "fresh"  # an empty or new folder is refused too and not created
    assert main(["--resume", str(run_dir / "last.pt"), "-o", str(fresh), "--epochs", "2"]) == 2
    _error(capsys)
    assert not fresh.exists()


def test_resume_of_a_moved_run_continues_in_its_new_folder(run_dir, tmp_path, capsys):
    import shutil

    moved = tmp_path / "moved"
    shutil.copytree(run_dir, moved)
    source_before = _tree_digest(run_dir)
    assert main(["--resume", str(moved / "last.pt"), "--epochs", "2"]) == 0
    _, ckpt = load_checkpoint(moved / "last.pt")
    assert ckpt.train_state["progress"]["epoch"] == 2
    assert json.loads((moved / "metrics.json").read_text())["epochs_done"] == 2
    assert _tree_digest(run_dir) == source_before


def test_resume_of_a_finished_run_says_so_and_names_best(run_dir, capsys):
    before = _tree_digest(run_dir)
    assert main(["--resume", str(run_dir / "last.pt")]) == 0
    out = capsys.readouterr().out
    assert "already finished its 1 epochs" in out and f"best: {run_dir / 'best.pt'}" in out
    assert "best: None" not in out
    assert _tree_digest(run_dir) == before


def test_interrupted_training_says_how_to_resume(synth_dataset, tmp_path, capsys, monkeypatch):
    from compressor.train import loop

    original = loop.Trainer._end_epoch

    def ctrl_c_after_first_epoch(self, *a, **k):
        original(self, *a, **k)
        raise KeyboardInterrupt

    monkeypatch.setattr(loop.Trainer, "_end_epoch", ctrl_c_after_first_epoch)
    out = tmp_path / "t"
    argv = ["--data", str(synth_dataset), "-o", str(out), "--epochs", "2", *ARGS]
    assert main(argv) == 130
    err = capsys.readouterr().err.strip()
    assert (
        err
        == f"interrupted: kept {out / 'last.pt'}; continue with: mtc-train --resume {out / 'last.pt'}"
    )


def test_checkpoints_get_umask_permissions(run_dir):
    import os

    umask = os.umask(0)
    os.umask(umask)
    assert (run_dir / "last.pt").stat().st_mode & 0o777 == 0o666 & ~umask
