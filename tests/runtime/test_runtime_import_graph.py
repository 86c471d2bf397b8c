"""No import cycle through the TensorRT build, the sidecar schema or the backends: the import graph
of `runtime`, read from the source with `ast` (lazy imports inside functions count: they are
where such cycles hide), has no cycle but the known ones listed here."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = ROOT / "runtime"
# Cycles this test does not hold against the tree (other work owns them). Every cycle found
# must lie inside one of these sets; none may touch the modules below.
KNOWN = (
    {"runtime.latency", "runtime.latency_plot", "runtime.latency_sources"},
    {
        "runtime.latency_model.timers",
        "runtime.latency_model.onnxruntime_timer",
        "runtime.latency_model.tensorrt_timer",
    },
)
NEVER_IN_A_CYCLE = ("runtime.tensorrt", "runtime.sidecar", "runtime.backends")


def _modules(root: Path) -> dict[str, Path]:
    out = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def import_graph(root: Path = RUNTIME) -> dict[str, set[str]]:
    """module -> the modules of `root` it imports. `from a.b import c` is an edge to `a.b.c`
    where that is a module, else to `a.b`; an import of a module's own package is no edge
    (the package is always initialised first, so it cannot close a cycle)."""
    mods = _modules(root)

    def owner(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                names = [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                target = owner(name)
                if target and target != mod and not mod.startswith(target + "."):
                    graph[mod].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _touches(component: set[str], prefix: str) -> bool:
    return any(m == prefix or m.startswith(prefix + ".") for m in component)


def test_no_cycle_through_the_tensorrt_build_the_sidecar_or_the_backends():
    found = cycles(import_graph())
    for component in found:
        bad = [p for p in NEVER_IN_A_CYCLE if _touches(component, p)]
        assert not bad, f"import cycle through {bad}: {sorted(component)}"
        assert any(component <= known for known in KNOWN), f"new cycle {sorted(component)}"


def test_the_sidecar_schema_and_the_target_table_do_not_import_the_builder():
    graph = import_graph()
    for module in ("runtime.sidecar", "runtime.tensorrt.targets"):
        assert not {m for m in graph[module] if m.startswith("runtime.tensorrt.")} - {
            "runtime.tensorrt.targets"
        }, f"{module} imports {sorted(graph[module])}"


def test_the_check_finds_the_cycle_of_the_old_layout(tmp_path):
    """The old layout (runtime/trt_build.py <-> trt_targets.py, and through a lazy import the
    sidecar schema and the backends) is a cycle to this check."""
    files = {
        "__init__.py": "",
        "trt_targets.py": "from runtime.trt_build import FP16_BUILDER_FLAG\n",
        "trt_build.py": (
            "def _gpu_from_mtc():\n    from runtime.backends.cuda_memory import create_memory\n"
            "def target_rows():\n    from runtime.trt_targets import TARGETS\n"
        ),
        "sidecar.py": "from runtime.trt_build import FP16_PATHS\n",
        "backends/__init__.py": "",
        "backends/base.py": "from runtime.sidecar import Sidecar\n",
        "backends/cuda_memory.py": "from runtime.backends.base import BackendError\n",
    }
    for name, text in files.items():
        (tmp_path / "runtime" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "runtime" / name).write_text(text)
    [component] = cycles(import_graph(tmp_path / "runtime"))
    assert component == {
        "runtime.trt_build",
        "runtime.trt_targets",
        "runtime.sidecar",
        "runtime.backends.base",
        "runtime.backends.cuda_memory",
    }
