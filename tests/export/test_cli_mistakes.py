"""Every CLI against the mistakes users make (issue 14): for each of the seven commands x {missing
input, corrupt input, output path under a file, output folder of another run, interrupted}, the
exit code, one line on stderr, no traceback, and nothing of the user's changed (the inputs and
the pre-existing folders hash the same before and after; nothing new appears)."""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))

from runtime_helpers import make_artifact  # noqa: E402

CLIS = ("synth", "train", "eval", "compress", "export", "run", "demo")
CASES = ("missing", "corrupt", "under_file", "other_run", "interrupted")


def _main(cli: str) -> Callable:
    if cli == "synth":
        from compressor.cli.synth import main
    elif cli == "train":
        from compressor.cli.train import main
    elif cli == "eval":
        from compressor.cli.evaluate import main
    elif cli == "compress":
        from compressor.cli.compress import main
    elif cli == "export":
        from export.cli import main
    elif cli == "run":
        from runtime.cli import main
    else:
        from demo.cli import main
    return main


def _call(cli: str, argv: list[str]) -> int:
    try:
        return int(_main(cli)(argv) or 0)
    except SystemExit as e:  # mtc-demo's main exits (a console-script entry point)
        return int(e.code or 0)


def tree_digest(root: Path) -> dict[str, str]:
    """Relative path -> sha256 for files, 'dir' for folders: what the user would see changed."""
    out: dict[str, str] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_ckpt) -> dict[str, Path]:
    """Good inputs (a tiny data set, a checkpoint, an ONNX artifact) and corrupt ones."""
    from compressor.data.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("inputs")
    data = root / "data"
    generate(
        SynthConfig(out=data, n_train=4, n_val=2, width=320, height=180, seed=0, workers=0),
        progress=False,
    )
    junk = root / "junk.pt"
    junk.write_bytes(os.urandom(256))
    junk_onnx = root / "junk.onnx"
    junk_onnx.write_bytes(os.urandom(256))
    junk_video = root / "clip.mp4"
    junk_video.write_bytes(os.urandom(512))
    return {
        "root": root,
        "data": data,
        "ckpt": Path(tiny_ckpt),
        "artifact": make_artifact(root),
        "junk": junk,
        "junk_onnx": junk_onnx,
        "junk_video": junk_video,
    }


def _other_run(ws: Path, cli: str) -> Path:
    """A folder that holds another run's (or export's) files, for `cli`'s output."""
    folder = ws / "used"
    folder.mkdir()
    files = {
        "synth": ["synth_manifest.json", "images/train/a.jpg"],
        "train": ["last.pt", "best.pt", "metrics.json"],
        "compress": ["student.pt", "report.json", "train/last.pt"],
        "export": ["student.onnx", "student.onnx.json", "student_fp16.onnx"],
        "demo": ["teacher/last.pt", "report.json"],
    }.get(cli, ["something.txt"])
    for name in files:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"another run's file " + name.encode())
    return folder


def _argv(cli: str, case: str, ws: Path, inp: dict[str, Path]) -> list[str]:
    data, ckpt, art = str(inp["data"]), str(inp["ckpt"]), str(inp["artifact"])
    blocker = ws / "a_file"
    blocker.write_text("the user's file")
    under = blocker / "sub"
    out = ws / "out"
    small = ["--imgsz", "64", "128", "--workers", "0", "--no-progress"]
    comp = [*small, "--batch", "2", "--calib-batches", "1", "--epochs", "1"]
    if case == "other_run":
        out = _other_run(ws, cli)
    if case == "under_file":
        out = under
    if cli == "synth":
        base = ["--n-train", "4", "--n-val", "2", "--width", "320", "--height", "180"]
        if case == "missing":
            return base  # --out is required
        if case == "corrupt":
            return ["--out", str(out), *base[:4], "--width", "0", "--height", "180"]
        return ["--out", str(out), *base, "--workers", "0", "--no-progress"]
    if cli == "train":
        tr = ["--epochs", "1", "--batch", "2", "--width", "0.25", "--depth", "0.33", *small]
        if case == "missing":
            return ["--data", str(ws / "no_such_data"), "-o", str(out), *tr]
        if case == "corrupt":
            return ["--data", data, "--init", str(inp["junk"]), "-o", str(out), *tr]
        return ["--data", data, "-o", str(out), *tr]
    if cli == "eval":
        ev = ["--data", data, "--batch", "2", "--workers", "0", "--no-progress"]
        if case == "missing":
            return [str(ws / "no_such.pt"), *ev, "--out", str(ws / "r.json")]
        if case == "corrupt":
            return [str(inp["junk"]), *ev, "--out", str(ws / "r.json")]
        if case == "under_file":
            return [ckpt, *ev, "--out", str(under / "r.json")]
        if case == "other_run":
            return [ckpt, *ev, "--out", str(out)]  # a folder where the report file goes
        return [ckpt, *ev, "--out", str(ws / "r.json")]
    if cli == "compress":
        if case == "missing":
            return ["--teacher", str(ws / "no.pt"), "--data", data, "-o", str(out), *comp]
        if case == "corrupt":
            return ["--teacher", str(inp["junk"]), "--data", data, "-o", str(out), *comp]
        return ["--teacher", ckpt, "--data", data, "-o", str(out), *comp]
    if cli == "export":
        ex = ["--engine", "none", "--no-progress", "--max-batch", "2"]
        if case == "missing":
            return [str(ws / "no.pt"), "-o", str(out), *ex]
        if case == "corrupt":
            return [str(inp["junk"]), "-o", str(out), *ex]
        return [ckpt, "-o", str(out), *ex]
    if cli == "run":
        frames = str(inp["data"] / "images" / "val")
        rn = ["--source", frames, "--quiet", "--max-frames", "2"]
        if case == "missing":
            return [str(ws / "no.onnx"), *rn, "--report", str(ws / "lat.json")]
        if case == "corrupt":
            return [str(inp["junk_onnx"]), *rn, "--report", str(ws / "lat.json")]
        if case == "under_file":
            return [art, *rn, "--report", str(under / "lat.json")]
        if case == "other_run":
            return [art, *rn, "--report", str(out)]  # --report at a folder
        return [art, *rn, "--report", str(ws / "lat.json")]
    # demo
    dm = ["--n-train", "8", "--n-val", "4", "--quiet"]
    if case == "missing":
        return ["--out", str(out), "--source", str(ws / "nonexistent"), *dm]
    if case == "corrupt":
        return ["--out", str(out), "--source", str(inp["junk_video"]), *dm]
    return ["--out", str(out), *dm]


# Where Ctrl-C lands for the "interrupted" case: the API call each CLI makes.
INTERRUPT_AT = {
    "synth": ("compressor.data.synth", "generate"),
    "train": ("compressor.cli.train", "train"),
    "eval": ("compressor.cli.evaluate", "evaluate_path"),
    "compress": ("compressor.cli.compress", "compress"),
    "export": ("export.pipeline", "export_model"),
    "run": ("runtime.cli", "execute"),
    "demo": ("demo.run", "run_demo"),
}

EXPECTED = {  # (cli, case) -> text the one line must contain
    ("synth", "missing"): "--out",
    ("synth", "corrupt"): "image size must be at least",
    ("synth", "other_run"): "already",
    ("train", "missing"): "does not exist",
    ("train", "corrupt"): "not a PyTorch checkpoint",
    ("train", "other_run"): "already holds a training run",
    ("eval", "missing"): "does not exist",
    ("eval", "corrupt"): "not a PyTorch checkpoint",
    ("eval", "other_run"): "is a folder",
    ("compress", "missing"): "does not exist",
    ("compress", "corrupt"): "not a PyTorch checkpoint",
    ("compress", "other_run"): "--overwrite",
    ("export", "missing"): "does not exist",
    ("export", "corrupt"): "not a PyTorch checkpoint",
    ("export", "other_run"): "already holds an export named 'student'",
    ("run", "missing"): "no.onnx",
    ("run", "corrupt"): "junk.onnx",
    ("run", "other_run"): "is a folder",
    ("demo", "missing"): "nonexistent",
    ("demo", "corrupt"): "clip.mp4",
    ("demo", "other_run"): "already holds a demo run",
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("cli", CLIS)
def test_cli_mistake(cli, case, inputs, tmp_path, capsys, monkeypatch):
    import importlib

    ws = tmp_path / "ws"
    ws.mkdir()
    argv = _argv(cli, case, ws, inputs)
    if cli == "export" and case == "other_run":
        argv += ["--name", "student"]
    if case == "interrupted":
        module, name = INTERRUPT_AT[cli]

        def ctrl_c(*a, **k):
            raise KeyboardInterrupt

        monkeypatch.setattr(importlib.import_module(module), name, ctrl_c)
    before_ws, before_inputs = tree_digest(ws), tree_digest(inputs["root"])
    code = _call(cli, argv)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert "Traceback" not in out + err
    assert len(lines) == 1, err
    if case == "interrupted":
        assert code == 130 and lines[0].startswith("interrupted: "), err
    else:
        assert code == 2 and lines[0].startswith("error: "), err
    if case == "under_file":
        assert "a_file" in lines[0] and "is a file" in lines[0], lines[0]
    expected = EXPECTED.get((cli, case))
    if expected:
        assert expected in lines[0], lines[0]
    assert tree_digest(ws) == before_ws, "the failed command changed the user's folder"
    assert tree_digest(inputs["root"]) == before_inputs, "the failed command changed an input"
