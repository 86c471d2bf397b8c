"""mtc-export: an impossible input size is one line before any work (no torch import, no folder),
a negative one hints the real stride, and SIGTERM stops an export as Ctrl-C does."""

from __future__ import annotations

import os
import signal
import time

import pytest

import export.pipeline
from export.cli import main


def _never(*a, **k):
    raise AssertionError("export_model must not be reached")


@pytest.mark.parametrize(
    "imgsz, expected",
    [
        (
            ("32000", "32000"),
            "--imgsz 32000 32000: each side must be at most 4096 (one float32 input of batch 1 "
            "is 11.4 GiB, its activations roughly 1689.0 GiB); try --imgsz 4096 4096",
        ),
        (("-32", "320"), "both sides must be positive"),
        (("-32", "320"), "try --imgsz 32 320"),
        (("0", "5000"), "try --imgsz 32 4096"),
    ],
)
def test_impossible_sizes_are_refused_before_any_work(
    tmp_path, capsys, monkeypatch, imgsz, expected
):
    monkeypatch.setattr(export.pipeline, "export_model", _never)
    ckpt = tmp_path / "m.pt"
    ckpt.write_bytes(b"not read")
    out = tmp_path / "out"
    assert main([str(ckpt), "-o", str(out), "--imgsz", *imgsz]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and expected in err
    assert "multiples of 1" not in err
    assert not out.exists()


def test_sigterm_stops_an_export_like_ctrl_c(tmp_path, capsys, monkeypatch):
    def killed(*a, **k):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler interrupts this
        raise AssertionError("SIGTERM did not stop the export")

    monkeypatch.setattr(export.pipeline, "export_model", killed)
    ckpt = tmp_path / "m.pt"
    ckpt.write_bytes(b"not read")
    # a handler of the test's own: without the command's, SIGTERM lands here (the test fails)
    # instead of killing pytest
    before = signal.signal(signal.SIGTERM, lambda *a: None)
    try:
        t0 = time.perf_counter()
        rc = main([str(ckpt), "-o", str(tmp_path / "out")])
        now = signal.getsignal(signal.SIGTERM)
    finally:
        mine = signal.signal(signal.SIGTERM, before)
    assert rc == 130
    assert time.perf_counter() - t0 < 4
    err = capsys.readouterr().err.strip()
    assert err.startswith("interrupted: nothing was kept") and "\n" not in err
    assert now is mine  # the command's handler is removed when it returns
    assert not (tmp_path / "out").exists()
