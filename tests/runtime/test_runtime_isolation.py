"""runtime stays torch-free and Python-3.10-clean (ARCHITECTURE.md, dependency rules)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from runtime_helpers import make_artifact

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = ROOT / "runtime"

SCRIPT = """
import sys, runtime
import numpy as np
from runtime import load_artifact, run
frames = [np.full((48, 80, 3), 200, np.uint8) for _ in range(3)]
with load_artifact(sys.argv[1]) as be:
    res = run(be, frames, batch=2, progress=False)
assert len(res.results) == 3 and res.results[0].drivable.all(), "pipeline gave wrong results"
heavy = [m for m in ("torch", "compressor", "export", "tensorrt", "matplotlib") if m in sys.modules]
assert not heavy, f"runtime imported {heavy}"
print("ok")
"""


def test_fresh_interpreter_runs_onnx_without_torch(tmp_path):
    art = make_artifact(tmp_path)
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(art)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def _imports(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_no_forbidden_imports_and_py310_clean():
    banned_mods = ("torch", "compressor", "export", "tomllib")
    banned_names = {"StrEnum", "ExceptionGroup", "TaskGroup", "UTC"}
    for path in RUNTIME.rglob("*.py"):
        src = path.read_text()
        tree = ast.parse(src)
        roots = {name.split(".")[0] for name in _imports(tree)}
        assert not roots & set(banned_mods), f"{path} imports {roots & set(banned_mods)}"
        used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        used |= {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
        assert not used & banned_names, f"{path} uses 3.11-only {used & banned_names}"
        if src.strip():
            assert "from __future__ import annotations" in src, f"{path} lacks the future import"
