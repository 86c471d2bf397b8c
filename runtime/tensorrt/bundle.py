"""The device build script: `runtime.tensorrt.cli` and every mtc module it imports, concatenated
into one Python file that runs where only TensorRT is installed (no torch, no mtc).

Generated at export time from the installed modules, never kept as a copy: each module's text
goes in as it is, minus its `from __future__` line and its imports of mtc modules (their names
are defined above it in the same file), in import order; the standard-library imports are
gathered at the top. That only works for modules that import mtc names as `from runtime.X
import name` at module level, import nothing outside the standard library at module level, and
define no name another bundled module defines; `bundle_modules` checks all three and refuses
otherwise (BundleError), so a module that breaks them fails the export and the tests, not the
build on the target."""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

from runtime.errors import MtcError

ENTRY = "runtime.tensorrt.cli"
_RUNTIME_DIR = Path(__file__).resolve().parents[1]


class BundleError(MtcError):
    """A module that cannot go into the single-file build script as it is."""


@dataclass(frozen=True)
class BundledModule:
    name: str  # "runtime.tensorrt.nms"
    path: Path
    body: str  # the module's text without its `from __future__` line and its imports
    imports: tuple[str, ...]  # its module-level standard-library import statements, as written
    needs: tuple[str, ...]  # the mtc modules it imports (module level)
    defines: frozenset[str]  # names it binds at module level (defs, classes, assignments)
    imported: frozenset[str]  # names its standard-library imports bind


def module_path(name: str) -> Path:
    parts = name.split(".")
    if parts[0] != "runtime":
        raise BundleError(f"{name} is not a module of mtc's runtime")
    base = _RUNTIME_DIR.joinpath(*parts[1:])
    path = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
    if not path.is_file():
        raise BundleError(f"no module {name} ({path})")
    return path


def read_module(name: str) -> BundledModule:
    path = module_path(name)
    text = path.read_text(encoding="utf-8")
    tree = ast.parse(text, str(path))
    lines = text.splitlines(keepends=True)
    drop: set[int] = set()  # 0-based line numbers of the statements taken out
    imports: list[str] = []
    needs: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            pass
        elif isinstance(node, ast.ImportFrom) and _is_mtc(node.module or "", node.level):
            needs.append(_mtc_names(name, node))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            imports.append(_stdlib_import(name, node, lines))
        else:
            _refuse_block_import(name, node)
            continue
        drop.update(range(node.lineno - 1, node.end_lineno or node.lineno))
    body = "".join(line for i, line in enumerate(lines) if i not in drop)
    return BundledModule(
        name,
        path,
        _squeeze_blank_lines(body),
        tuple(imports),
        tuple(needs),
        _bound(tree),
        _imported(tree),
    )


def bundle_modules(entry: str = ENTRY) -> list[BundledModule]:
    """`entry` and the mtc modules it imports, each after the ones it needs; checked that no two
    of them bind the same name (in one file they would overwrite each other)."""
    order: list[BundledModule] = []
    seen: dict[str, BundledModule] = {}

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in path:
            raise BundleError(f"import cycle {' -> '.join((*path, name))}")
        if name in seen:
            return
        module = read_module(name)
        for dep in module.needs:
            visit(dep, (*path, name))
        seen[name] = module
        order.append(module)

    visit(entry, ())
    owner: dict[str, str] = {}
    for module in order:
        for bound in sorted(module.defines):
            if bound in owner:
                raise BundleError(
                    f"{module.name} and {owner[bound]} both define {bound!r}; the build script "
                    "puts them in one namespace: rename one"
                )
            owner[bound] = module.name
    for module in order:
        clash = sorted(module.imported & set(owner))
        if clash:
            raise BundleError(
                f"{module.name} imports {clash[0]!r}, which {owner[clash[0]]} defines; the build "
                "script puts them in one namespace: rename one"
            )
    return order


def bundle_script(shipped_args: list[str], header: str = "", entry: str = ENTRY) -> str:
    """The device build script's text: a shebang, `header` (comment lines), the modules, then
    `SHIPPED_ARGS` (the export's arguments) and the call of `main` with them."""
    modules = bundle_modules(entry)
    imports = sorted(
        {i for m in modules for i in m.imports}, key=lambda i: (i.startswith("from "), i)
    )
    names = "".join(f"- {m.name}\n" for m in modules)
    out = [
        "#!/usr/bin/env python3\n",
        header,
        '"""Build a TensorRT engine (+ its sidecar) from an mtc ONNX export; `--help` says how.\n\n'
        "Generated by runtime/tensorrt/bundle.py from these modules of mtc, each below under its\n"
        f'name; it needs TensorRT\'s Python package only:\n{names}"""\n\n',
        "from __future__ import annotations\n\n",
        *(f"{i}\n" for i in imports),
    ]
    for m in modules:
        title = f"{m.name} ({m.path.relative_to(_RUNTIME_DIR.parent).as_posix()})"
        out.append(f"\n\n# {'=' * 8} {title} {'=' * max(4, 86 - len(title))}\n")
        out.append(m.body.strip("\n") + "\n")
    out += [
        f"\n\n# {'=' * 8} the export's arguments {'=' * 64}\n",
        f"SHIPPED_ARGS: list[str] = {shipped_args!r}\n\n",
        'if __name__ == "__main__":\n',
        "    sys.exit(main(shipped_args=SHIPPED_ARGS, base=Path(__file__).resolve().parent))\n",
    ]
    return "".join(out)


def _is_mtc(module: str, level: int) -> bool:
    return level > 0 or module == "runtime" or module.startswith("runtime.")


def _mtc_names(where: str, node: ast.ImportFrom) -> str:
    """The module a `from runtime.X import a, b` needs; names only, no aliases, no modules."""
    module = node.module or ""
    if node.level or module == "runtime":
        raise BundleError(
            f"{where} line {node.lineno}: write `from runtime.<module> import <name>`; the build "
            "script bundles names, not packages or relative imports"
        )
    for alias in node.names:
        if alias.asname not in (None, alias.name) or alias.name == "*":
            raise BundleError(
                f"{where} line {node.lineno}: `{alias.name} as {alias.asname}` / `*`: the build "
                "script defines each name once, under its own name"
            )
        if _is_module(f"{module}.{alias.name}"):
            raise BundleError(
                f"{where} line {node.lineno}: imports the module {module}.{alias.name}; import "
                "the names it needs instead"
            )
    return module


def _is_module(name: str) -> bool:
    try:
        module_path(name)
    except BundleError:
        return False
    return True


def _stdlib_import(where: str, node: ast.Import | ast.ImportFrom, lines: list[str]) -> str:
    roots = (
        [a.name.split(".")[0] for a in node.names]
        if isinstance(node, ast.Import)
        else [(node.module or "").split(".")[0]]
    )
    outside = [r for r in roots if r not in sys.stdlib_module_names]
    if outside:
        raise BundleError(
            f"{where} line {node.lineno} imports {', '.join(outside)} at module level; the build "
            "script runs with the standard library and TensorRT only: import it where it is used"
        )
    text = "".join(lines[node.lineno - 1 : node.end_lineno]).strip()
    return " ".join(text.split()).replace("( ", "(").replace(", )", ")")


def _refuse_block_import(where: str, node: ast.AST) -> None:
    """Module-level blocks (try / if) must not import mtc: their names would not be bundled.
    Function bodies may (they import at call time, and a lazy import of mtc outside the
    bundle fails there as it would without mtc)."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
        return
    mtc = (isinstance(node, ast.ImportFrom) and _is_mtc(node.module or "", node.level)) or (
        isinstance(node, ast.Import) and any(_is_mtc(a.name, 0) for a in node.names)
    )
    if mtc:
        raise BundleError(
            f"{where} line {getattr(node, 'lineno', '?')}: an mtc import inside a module-level "
            "block; import it at the top of the module"
        )
    for child in ast.iter_child_nodes(node):
        _refuse_block_import(where, child)


def _bound(tree: ast.Module) -> frozenset[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    return frozenset(names)


def _imported(tree: ast.Module) -> frozenset[str]:
    """Names the module-level standard-library imports bind (`import os.path` binds `os`)."""
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not _is_mtc(node.module or "", node.level):
            names.update(a.asname or a.name for a in node.names if node.module != "__future__")
    return frozenset(names)


def _squeeze_blank_lines(text: str) -> str:
    """At most two blank lines in a row where imports were taken out."""
    out: list[str] = []
    for line in text.splitlines(keepends=True):
        if not line.strip() and len(out) >= 2 and not out[-1].strip() and not out[-2].strip():
            continue
        out.append(line)
    return "".join(out)
