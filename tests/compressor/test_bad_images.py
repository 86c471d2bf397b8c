"""A truncated image in training/evaluation data: a named one-line error (also when a DataLoader
worker process reads it), or, with --skip-bad-images, the sample is left out and counted."""

from __future__ import annotations

import shutil

import pytest

from compressor.cli.evaluate import main as eval_main
from compressor.cli.train import main as train_main
from compressor.data import BddDataset, DataConfig, ImageReadError, make_loader

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def bad_data(synth_dataset, tmp_path):
    root = tmp_path / "bad"
    shutil.copytree(synth_dataset, root)
    victim = sorted((root / "images" / "train").iterdir())[1]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    return root, victim


def test_worker_error_reaches_the_main_process_as_the_named_error(bad_data):
    root, victim = bad_data
    ds = BddDataset(root, "train", DataConfig(input_hw=(64, 128)))
    with pytest.raises(ImageReadError) as e:
        for _ in make_loader(ds, 2, shuffle=False, workers=2):
            pass
    msg = str(e.value)
    assert (
        msg == f"image {victim}: truncated JPEG (no end-of-image marker FFD9 at the end of "
        "the file); re-copy or delete the file"
    )
    assert "Traceback" not in msg and "\n" not in msg


def test_train_stops_with_one_line_or_skips_when_asked(bad_data, tmp_path, capsys):
    root, victim = bad_data
    argv = [
        *("--data", str(root), "--imgsz", "64", "128", "--width", "0.25", "--depth", "0.33"),
        *("--epochs", "1", "--batch", "2", "--workers", "2", "--no-progress"),
    ]
    assert train_main([*argv, "-o", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and victim.name in err and "truncated JPEG" in err
    assert not (tmp_path / "a").exists()  # a failed run leaves no empty folder
    with pytest.warns(UserWarning, match=f"skipped 1 sample.*{victim.name}"):
        assert train_main([*argv, "-o", str(tmp_path / "b"), "--skip-bad-images"]) == 0
    assert (tmp_path / "b" / "last.pt").is_file()


def test_eval_of_a_truncated_val_image(bad_data, tmp_path, capsys):
    from compressor import build_model, save_checkpoint
    from compressor.checkpoint import default_preprocess

    root, _ = bad_data
    victim = sorted((root / "images" / "val").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:500])
    ckpt = tmp_path / "m.pt"
    save_checkpoint(
        ckpt, build_model("yolop", width=0.25, depth=0.33), preprocess=default_preprocess((64, 128))
    )
    argv = [str(ckpt), "--data", str(root), "--batch", "2", "--workers", "0", "--no-progress"]
    assert eval_main([*argv, "--out", str(tmp_path / "r.json")]) == 2
    assert victim.name in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()
    with pytest.warns(UserWarning, match="skipped 1 sample"):
        assert eval_main([*argv, "--out", str(tmp_path / "r.json"), "--skip-bad-images"]) == 0
    assert (tmp_path / "r.json").is_file()
