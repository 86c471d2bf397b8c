"""The device build script is generated from runtime/tensorrt's modules (runtime/tensorrt/bundle.py),
not kept as a copy: each module once, as it is; it runs with the standard library alone; and a
module that could not be bundled is refused at export time. The full build with it, in a fresh
interpreter without torch or mtc, is in tests/export/test_tensorrt_engine_path.py."""

from __future__ import annotations

import ast
import collections
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.tensorrt import bundle
from runtime.tensorrt.bundle import BundleError, bundle_modules, bundle_script

ROOT = Path(__file__).resolve().parents[2]
ARGS = ["m.onnx", "--engine", "m_fp16.engine", "--precision", "fp16"]


def test_every_build_module_is_in_the_script_once_and_nothing_else_is():
    modules = bundle_modules()
    names = [m.name for m in modules]
    package = {
        f"runtime.tensorrt.{p.stem}"
        for p in (ROOT / "runtime" / "tensorrt").glob("*.py")
        if p.stem not in ("__init__", "__main__", "bundle")
    }
    assert package <= set(names) and names[-1] == "runtime.tensorrt.cli"
    assert len(names) == len(set(names))
    script = bundle_script(ARGS, "# header\n")
    for m in modules:
        assert script.count(m.body.strip("\n")) == 1, m.name
    # what is left once the module bodies are taken out: a docstring, imports and the call only
    rest = script
    for m in modules:
        rest = rest.replace(m.body.strip("\n"), "")
    docstring, *imports, args, call = ast.parse(rest).body
    assert isinstance(docstring, ast.Expr) and isinstance(docstring.value, ast.Constant)
    assert all(isinstance(i, ast.Import | ast.ImportFrom) for i in imports)
    roots = {(i.module or "").split(".")[0] for i in imports if isinstance(i, ast.ImportFrom)}
    assert roots <= sys.stdlib_module_names
    assert ast.unparse(args) == f"SHIPPED_ARGS: list[str] = {ARGS!r}"
    assert ast.unparse(call) == (
        "if __name__ == '__main__':\n"
        "    sys.exit(main(shipped_args=SHIPPED_ARGS, base=Path(__file__).resolve().parent))"
    )


def test_no_function_or_class_is_defined_twice():
    tree = ast.parse(bundle_script(ARGS))
    defs = [
        n.name
        for n in tree.body
        if isinstance(n, ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef)
    ]
    assert [n for n, k in collections.Counter(defs).items() if k > 1] == []
    # and the package's modules define no copy of what they import from each other
    for m in bundle_modules():
        assert not m.defines & m.imported, m.name


def test_the_script_runs_with_the_standard_library_alone(tmp_path):
    """-I -S: no PYTHONPATH, no site-packages (so neither mtc nor numpy nor TensorRT)."""
    script = tmp_path / "m_build_engine.py"
    script.write_text(bundle_script(ARGS))
    done = subprocess.run(
        [sys.executable, "-I", "-S", str(script), "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: m_build_engine.py [-h]") and "--trt-nms" in done.stdout
    (tmp_path / "m.onnx").write_bytes(b"onnx")  # the build then needs TensorRT: one line
    (tmp_path / "m.onnx.json").write_text("{}")
    done = subprocess.run(
        [sys.executable, "-I", "-S", str(script), "--no-sidecar", "--min-shapes", "x:1x3"]
        + ["--opt-shapes", "x:1x3", "--max-shapes", "x:1x3"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: TensorRT is not installed; install TensorRT's")


def _fake_runtime(monkeypatch, tmp_path: Path, files: dict[str, str]) -> None:
    for name, text in {"__init__.py": "", "errors.py": "X = 1\n", **files}.items():
        path = tmp_path / "runtime" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    monkeypatch.setattr(bundle, "_RUNTIME_DIR", tmp_path / "runtime")


@pytest.mark.parametrize(
    "entry, match",
    [
        ("import numpy\n", "imports numpy at module level"),
        ("from runtime.errors import X as Y\n", "under its own name"),
        ("from runtime import errors\n", "bundles names, not packages"),
        ("from .errors import X\n", "bundles names, not packages"),
        ("from runtime.pkg import errors\n", "imports the module runtime.pkg.errors"),
        ("try:\n    from runtime.errors import X\nexcept ImportError:\n    X = 2\n", "inside a"),
        ("X = 2\n", "runtime.entry and runtime.errors both define 'X'"),
        ("from os import sep as X\n", "imports 'X', which runtime.errors defines"),
    ],
)
def test_a_module_that_cannot_be_bundled_is_refused(monkeypatch, tmp_path, entry, match):
    pkg = {"pkg/__init__.py": "", "pkg/errors.py": "Z = 3\n"}
    entry = f"from runtime.errors import X\nfrom runtime.pkg.errors import Z\n{entry}"
    _fake_runtime(monkeypatch, tmp_path, {"entry.py": entry, **pkg})
    with pytest.raises(BundleError, match=match):
        bundle_modules("runtime.entry")


def test_lazy_imports_inside_functions_are_left_to_run_time(monkeypatch, tmp_path):
    entry = (
        "from runtime.errors import X\n\n\ndef gpu():\n"
        "    from runtime.backends.cuda_memory import create_memory\n    return create_memory\n"
    )
    _fake_runtime(monkeypatch, tmp_path, {"entry.py": entry})
    [errors, main] = bundle_modules("runtime.entry")
    assert (errors.name, main.name, main.needs) == (
        "runtime.errors",
        "runtime.entry",
        ("runtime.errors",),
    )
    assert "from runtime.backends.cuda_memory import create_memory" in main.body
    assert "from runtime.errors import X" not in main.body
