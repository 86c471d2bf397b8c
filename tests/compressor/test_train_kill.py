"""A real `mtc-train` process SIGKILLed mid-epoch leaves a loadable checkpoint that resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compressor import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "compressor.cli.train", *args]


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_sigkill_mid_epoch_then_resume_completes(synth_dataset, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    args = [
        "--data",
        str(synth_dataset),
        "-o",
        str(out),
        "--imgsz",
        "64",
        "128",
        "--width",
        "0.25",
        "--depth",
        "0.33",
        "--batch",
        "2",
        "--max-train-images",
        "6",
        "--max-val-images",
        "2",
        "--workers",
        "0",
        "--no-progress",
        "--save-every",
        "1",
        "--eval-every",
        "0",
    ]
    proc = subprocess.Popen(
        _cmd(*args, "--epochs", "50"),
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 90
    try:
        while not (out / "last.pt").exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoint within 90 s"
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    _, ckpt = load_checkpoint(out / "last.pt")
    progress = ckpt.train_state["progress"]
    assert progress["step"] >= 1 and progress["epoch"] < 2
    done = subprocess.run(
        _cmd("--resume", str(out / "last.pt"), "--epochs", "2", "--no-progress"),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    _, final = load_checkpoint(out / "last.pt")
    assert final.train_state["progress"]["epoch"] == 2
    assert final.train_state["progress"]["step"] == 6  # 3 steps per epoch, none lost or repeated
    assert (out / "best.pt").is_file() and (out / "metrics.json").is_file()
