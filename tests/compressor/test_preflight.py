"""mtc-compress: a batch larger than the training set fails before the teacher is loaded (or,
counted exactly, before pruning), and a run that fails before its first resumable checkpoint
leaves nothing that refuses the corrected rerun (it used to leave compress_state.json)."""

from __future__ import annotations

import shutil

import pytest
import torch

import compressor.compress as compress_mod
from compressor import build_model, save_checkpoint
from compressor.checkpoint import default_preprocess
from compressor.cli.compress import main
from compressor.compress_resume import STATE_FILE, check_out_folder
from runtime.errors import MtcError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    save_checkpoint(
        path, build_model("yolop", width=0.25, depth=0.33), preprocess=default_preprocess((64, 128))
    )
    return path


def _argv(teacher, data, out, *extra):
    return [
        "--teacher", str(teacher), "--data", str(data), "-o", str(out),
        "--imgsz", "64", "128", "--calib-batches", "1", "--workers", "0", "--no-progress",
        "--max-val-images", "2", "--epochs", "1", *extra,
    ]  # fmt: skip


def _never(*a, **k):
    raise AssertionError("must not be reached")


def test_batch_larger_than_the_training_set_fails_before_loading(
    teacher, synth_dataset, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(compress_mod, "load_checkpoint", _never)
    out = tmp_path / "c"
    assert main(_argv(teacher, synth_dataset, out, "--batch", "8")) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: --batch 8 is larger than the 6 image files in {synth_dataset} split 'train'; "
        "use --batch 6 or less, or add images (checked before loading the teacher: nothing was "
        "written)"
    )
    assert not out.exists()
    check_out_folder(out, resume=False, overwrite=False)  # the corrected rerun is not refused
    # --max-train-images counts: 4 images, batch 5
    assert main(_argv(teacher, synth_dataset, out, "--batch", "5", "--max-train-images", "4")) == 2
    assert "larger than the 4 image files" in capsys.readouterr().err


def test_prune_only_run_does_not_need_a_training_batch(teacher, synth_dataset, tmp_path):
    from compressor.compress import CompressConfig
    from compressor.compress_preflight import check_batch_before_loading

    cfg = CompressConfig(teacher=str(teacher), data=str(synth_dataset), batch=64, epochs=0)
    check_batch_before_loading(cfg)  # no error: the batch only evaluates


def test_exact_count_is_checked_before_pruning(
    teacher, synth_dataset, tmp_path, capsys, monkeypatch
):
    data = tmp_path / "d"
    shutil.copytree(synth_dataset, data)
    victim = sorted((data / "det_annotations" / "train").iterdir())[0]
    victim.unlink()  # 6 image files, 5 labelled
    monkeypatch.setattr(compress_mod, "prune", _never)
    out = tmp_path / "c"
    with pytest.warns(UserWarning, match="skipped 1 unlabeled"):
        assert main(_argv(teacher, data, out, "--batch", "6")) == 2
    err = capsys.readouterr().err.strip()
    assert "--batch 6 is larger than the 5 labelled training images" in err and "\n" not in err
    assert not out.exists()


def test_failure_after_pruning_leaves_nothing_that_blocks_the_rerun(
    teacher, synth_dataset, tmp_path, capsys, monkeypatch
):
    def fails(*a, **k):
        assert (out / STATE_FILE).is_file()  # pruning finished and saved its state
        raise MtcError("student training failed")

    monkeypatch.setattr(compress_mod, "_train_student", fails)
    out = tmp_path / "c"
    argv = _argv(teacher, synth_dataset, out, "--batch", "2", "--max-train-images", "2")
    assert main(argv) == 2
    assert "student training failed" in capsys.readouterr().err
    assert not out.exists()  # made by this run, emptied again
    check_out_folder(out, resume=False, overwrite=False)

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    out.mkdir()
    (out / "notes.txt").write_text("the user's")
    monkeypatch.setattr(compress_mod, "_train_student", interrupted)
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "nothing of this run was kept" in err and "run the same command again" in err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # only the user's file


def test_mtc_train_refuses_a_too_large_batch_before_building_the_model(
    synth_dataset, tmp_path, capsys, monkeypatch
):
    import compressor.train.loop as loop
    from compressor.cli.train import main as train_main

    monkeypatch.setattr(loop, "load_model", _never)
    out = tmp_path / "t"
    argv = ["--data", str(synth_dataset), "-o", str(out), "--batch", "7", "--no-progress"]
    assert train_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "batch 7 is larger than the 6 training images" in err and "--batch 6" in err
    assert "\n" not in err and not out.exists()


def test_label_flags_land_in_every_config():
    from compressor.cli.compress import build_parser as compress_parser
    from compressor.cli.compress import config_from_args as compress_config
    from compressor.cli.evaluate import build_parser as eval_parser
    from compressor.cli.evaluate import job_from_args
    from compressor.cli.train import build_parser as train_parser
    from compressor.cli.train import config_from_args as train_config

    flags = ["--strict-labels", "--mask-map", "drivable:7=1", "--mask-map", "lane:1-254=1"]
    want = ("drivable:7=1", "lane:1-254=1")
    t = train_config(train_parser().parse_args(["--data", "d", *flags]))
    c = compress_config(compress_parser().parse_args(["--teacher", "t", "--data", "d", *flags]))
    e, _ = job_from_args(eval_parser().parse_args(["ck.pt", "--data", "d", *flags]))
    for cfg in (t, c, e):
        assert cfg.strict_labels is True and cfg.mask_map == want
    with pytest.raises(MtcError, match="expected TASK:VALUE=CLASS"):
        train_config(train_parser().parse_args(["--data", "d", "--mask-map", "drivable=1"]))
