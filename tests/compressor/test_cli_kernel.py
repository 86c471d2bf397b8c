"""The CLI kernel every mtc-* command runs under (runtime/cli_kernel.py): exit codes, one-line
messages, missing extras, output-path checks, help texts with defaults."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.cli_kernel import (
    CliInterrupted,
    OutputPathError,
    check_output_dir,
    check_output_file,
    one_line,
    run_cli,
)
from runtime.errors import MtcError

ROOT = Path(__file__).resolve().parents[2]


def test_exit_codes_and_one_line_messages(capsys, monkeypatch):
    import runtime.cli_kernel as kernel

    silenced = []
    monkeypatch.setattr(kernel, "_silence_stdout", lambda: silenced.append(True))  # keep fd 1

    def raises(exc):
        def fn(argv):
            raise exc

        return fn

    assert run_cli(raises(MtcError("bad thing\nsecond line")), []) == 2
    assert capsys.readouterr().err == "error: bad thing second line\n"
    assert run_cli(raises(KeyboardInterrupt), []) == 130
    assert capsys.readouterr().err.startswith("interrupted: ")
    assert run_cli(raises(CliInterrupted("kept x; resume with y")), []) == 130
    assert capsys.readouterr().err == "interrupted: kept x; resume with y\n"
    assert run_cli(raises(PermissionError(13, "Permission denied", "/x/y")), []) == 2
    assert capsys.readouterr().err.startswith("error: /x/y: Permission denied;")
    err = ModuleNotFoundError("No module named 'onnx'", name="onnx")
    assert run_cli(raises(err), [], prog="mtc-export") == 2
    line = capsys.readouterr().err
    assert "mtc-export needs onnx" in line and "pip install 'mtc[all]'" in line  # torch + onnx
    err = ModuleNotFoundError("No module named 'onnxruntime'", name="onnxruntime")
    assert run_cli(raises(err), [], prog="mtc-run") == 2
    assert "pip install 'mtc[onnx]'" in capsys.readouterr().err
    assert run_cli(raises(BrokenPipeError(32, "Broken pipe")), []) == 141
    assert capsys.readouterr().err == "" and silenced  # `mtc-run ... | head`: quiet
    assert run_cli(lambda argv: None, []) == 0
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        run_cli(lambda argv: 1 / 0, [])


def test_worker_traceback_is_reduced_to_the_original_message():
    wrapped = (
        "Caught ImageReadError in DataLoader worker process 0.\nOriginal Traceback (most recent "
        'call last):\n  File "x.py", line 1, in f\ncompressor.data.errors.ImageReadError: '
        "image a.jpg: truncated JPEG\n"
    )
    assert one_line(wrapped) == "image a.jpg: truncated JPEG"


def test_output_paths(tmp_path):
    blocker = tmp_path / "f"
    blocker.write_text("x")
    with pytest.raises(OutputPathError, match="is a file; expected a folder"):
        check_output_dir(blocker)
    with pytest.raises(OutputPathError, match="f is a file, not a folder"):
        check_output_dir(blocker / "a" / "b")
    with pytest.raises(OutputPathError, match="is a folder; expected a file"):
        check_output_file(tmp_path, "--report")
    with pytest.raises(OutputPathError, match="f is a file, not a folder"):
        check_output_file(blocker / "r.json", "--report")
    assert check_output_dir(tmp_path / "new" / "dir") == tmp_path / "new" / "dir"
    assert not (tmp_path / "new").exists()  # checking creates nothing
    if os.geteuid() != 0:  # root can write anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(OutputPathError, match="not writable"):
            check_output_dir(ro / "out")


@pytest.mark.parametrize(
    "module, extra",
    [
        ("compressor.cli.train", "compress"),
        ("compressor.cli.compress", "compress"),
        ("demo.cli", "all"),
    ],
)
def test_without_torch_the_torch_side_names_the_extra(module, extra):
    """The base install (`pip install .`) has no torch: one line naming the extra."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        f"from {module} import main\n"
        "sys.exit(main(['--out', 'no_such_dir/demo']))\n"  # reached by mtc-demo only
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    lines = out.stderr.strip().splitlines()
    assert out.returncode != 0 and len(lines) == 1, out.stderr
    assert lines[0].startswith("error: ") and f"pip install 'mtc[{extra}]'" in lines[0]
    assert "Traceback" not in out.stderr


def test_import_compressor_without_torch_is_a_named_error():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "try:\n    import compressor\n"
        "except ModuleNotFoundError as e:\n    print(type(e).__name__, e.name, e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.stdout.startswith("MissingExtraError torch the compressor package needs torch")
    assert "pip install 'mtc[compress]'" in out.stdout


@pytest.mark.parametrize(
    "module, expect",
    [
        ("compressor.cli.train", ["--lr LR", "(default: 0.01)", "(default: 384 640)"]),
        ("compressor.cli.compress", ["--ratio RATIO", "(default: 0.4)", "--importance IMPORTANCE"]),
        ("compressor.cli.evaluate", ["(default: 8)", "(default: yolop)"]),
        ("compressor.cli.synth", ["(default: 0)"]),
        ("export.cli", ["(default: export_out)", "(default: 17)"]),
        ("runtime.cli", ["(default: 2)", "(default: 30.0)"]),
    ],
)
def test_help_shows_defaults_and_no_internal_names(module, expect, capsys):
    import importlib

    main = importlib.import_module(module).main
    try:
        code = main(["--help"])
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr().out
    assert code == 0
    assert "__" not in out, [ln for ln in out.splitlines() if "__" in ln]
    for text in expect:
        assert text in " ".join(out.split()), text
