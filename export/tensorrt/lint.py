"""Hop 3, before any build: TensorRT compatibility lint without a GPU.

No GPU-free TensorRT parser exists, so this is the closest static check: ONNX checker, strict
shape inference, the opset range of the target, every node against the onnx-tensorrt operator
table of the target release (the targets: runtime/tensorrt/targets.py; their tables are shipped in
`export/tensorrt/data/`, source named inside), per-op
restrictions (`lint_rules`), UINT8 only at the network boundary, and static shapes except the
batch axis. Errors fail the export; warnings (uncertain table entries) are reported only."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path

import onnx
from onnx import TensorProto

from export.errors import ExportConfigError, LintError
from export.tensorrt.rules import RULES, GraphConstants
from runtime.tensorrt.targets import DEFAULT_TARGET, TrtTarget, TrtTargetError, get_target

DATA_DIR = Path(__file__).parent / "data"
_DEFAULT_DOMAINS = ("", "ai.onnx")
_TYPE_NAMES: dict[int, str] = {
    TensorProto.FLOAT: "FP32",
    TensorProto.FLOAT16: "FP16",
    TensorProto.BFLOAT16: "BF16",
    TensorProto.INT32: "INT32",
    TensorProto.INT64: "INT64",
    TensorProto.UINT8: "UINT8",
    TensorProto.BOOL: "BOOL",
    TensorProto.INT8: "INT8",
    TensorProto.DOUBLE: "DOUBLE",
}


@dataclass
class LintIssue:
    severity: str  # "error" | "warning"
    check: str
    reason: str
    node: str = ""
    op: str = ""


@dataclass
class LintReport:
    target: str
    table_source: str
    opset: int | None
    ops: dict[str, int]
    issues: list[LintIssue] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def errors(self) -> list[LintIssue]:
        return [i for i in self.issues if i.severity == "error"]

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "target_tensorrt": self.target,
            "table_source": self.table_source,
            "opset": self.opset,
            "ops": self.ops,
            "issues": [asdict(i) for i in self.issues],
        }

    def format_text(self) -> str:
        head = (
            f"TensorRT {self.target} lint: {'PASS' if self.ok else 'FAIL'} "
            f"(opset {self.opset}, {sum(self.ops.values())} nodes, {len(self.ops)} op types)"
        )
        lines = [head]
        for i in self.issues:
            where = f" node {i.node!r} ({i.op})" if i.node or i.op else ""
            lines.append(f"  {i.severity}: [{i.check}]{where}: {i.reason}")
        return "\n".join(lines)


def lint_target(target: str) -> TrtTarget:
    try:
        return get_target(target)
    except TrtTargetError as e:
        raise ExportConfigError(f"no op table for TensorRT {target!r}: {e}") from None


def op_table(target: str) -> dict:
    """The operator table of `target` (its entry names the file)."""
    t = lint_target(target)
    table = _load_table(str(DATA_DIR / t.op_table))
    if table.get("tensorrt") != t.name:
        raise ExportConfigError(
            f"{t.op_table} is the op table of TensorRT {table.get('tensorrt')!r}, not of target "
            f"{t.name!r}; fix op_table in runtime/tensorrt/targets.py"
        )
    return table


@cache
def _load_table(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _node_name(node: onnx.NodeProto, i: int) -> str:
    return node.name or f"#{i}"


def _check_structure(model: onnx.ModelProto, rep: LintReport) -> onnx.ModelProto | None:
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:
        rep.issues.append(LintIssue("error", "onnx-checker", str(e).splitlines()[0][:300]))
        return None
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except Exception as e:
        rep.issues.append(LintIssue("error", "shape-inference", str(e).splitlines()[0][:300]))
        return None


def _check_opsets(model: onnx.ModelProto, target: TrtTarget, rep: LintReport) -> None:
    for imp in model.opset_import:
        if imp.domain in _DEFAULT_DOMAINS:
            rep.opset = imp.version
            lo, hi = target.opset_min, target.opset_max
            if not lo <= imp.version <= hi:
                rep.issues.append(
                    LintIssue(
                        "error",
                        "opset",
                        f"opset {imp.version} is outside {lo}..{hi}, what "
                        f"TensorRT {rep.target} parses; re-export with --opset 17",
                    )
                )


def _check_ops(graph: onnx.GraphProto, table: dict, elem: dict[str, int], rep: LintReport) -> None:
    consts = GraphConstants(graph)
    for i, node in enumerate(graph.node):
        name = _node_name(node, i)
        if node.domain not in _DEFAULT_DOMAINS:
            rep.issues.append(
                LintIssue(
                    "error",
                    "op-support",
                    f"custom domain {node.domain!r}: TensorRT needs a "
                    "plugin for it, and none is registered at export",
                    name,
                    node.op_type,
                )
            )
            continue
        entry = table["ops"].get(node.op_type)
        if entry is None or not entry["supported"]:
            why = (entry or {}).get("note") or "not supported by the onnx-tensorrt parser"
            if entry is None:
                why = "not in the onnx-tensorrt operator table for this release"
            rep.issues.append(LintIssue("error", "op-support", why, name, node.op_type))
            continue
        if entry.get("uncertain"):
            note = table["uncertain_notes"].get(node.op_type, "support not confirmed")
            rep.issues.append(LintIssue("warning", "op-support", note, name, node.op_type))
        rule = RULES.get(node.op_type)
        for reason in rule(node, consts, rep.target) if rule else []:
            rep.issues.append(LintIssue("error", "op-restriction", reason, name, node.op_type))
        _check_input_type(node, name, entry, elem, rep)


def _check_input_type(
    node: onnx.NodeProto, name: str, entry: dict, elem: dict[str, int], rep: LintReport
) -> None:
    """The table lists types per op; a miss is a warning (the tables summarise, not specify)."""
    if not node.input or node.input[0] not in elem or "types" not in entry:
        return
    t = _TYPE_NAMES.get(elem[node.input[0]], str(elem[node.input[0]]))
    if t not in entry["types"]:
        rep.issues.append(
            LintIssue(
                "warning",
                "op-type",
                f"input type {t} not listed ({', '.join(entry['types'])})",
                name,
                node.op_type,
            )
        )


def _check_io(graph: onnx.GraphProto, elem: dict[str, int], rep: LintReport) -> None:
    boundary = {v.name for v in list(graph.input) + list(graph.output)}
    for tensor, t in elem.items():
        if t == TensorProto.UINT8 and tensor not in boundary:
            rep.issues.append(
                LintIssue(
                    "error",
                    "uint8",
                    f"tensor {tensor!r} is UINT8 inside the graph; TensorRT "
                    "takes UINT8 only as a network input or output",
                )
            )
    inits = {t.name for t in graph.initializer}
    for v in list(graph.input) + list(graph.output):
        if v.name in inits:
            continue
        dims = v.type.tensor_type.shape.dim
        bad = [
            k
            for k, d in enumerate(dims)
            if k > 0 and not (d.HasField("dim_value") and d.dim_value > 0)
        ]
        if bad:
            shape = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims]
            rep.issues.append(
                LintIssue(
                    "error",
                    "static-shape",
                    f"{v.name!r} has shape {shape}: only axis 0 (batch) "
                    "may be dynamic; export with a fixed --imgsz",
                )
            )


def _elem_types(inferred: onnx.ModelProto) -> dict[str, int]:
    g = inferred.graph
    out = {
        v.name: v.type.tensor_type.elem_type
        for v in list(g.value_info) + list(g.input) + list(g.output)
    }
    out.update({t.name: t.data_type for t in g.initializer})
    return out


def lint_onnx(model: onnx.ModelProto | str | Path, target: str = DEFAULT_TARGET) -> LintReport:
    """Lint one ONNX (proto or path) for TensorRT `target` (a name in runtime/tensorrt/targets.py)."""
    table = op_table(target)
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    counts = Counter(n.op_type for n in model.graph.node)
    rep = LintReport(target, table["source"], None, dict(sorted(counts.items())))
    if table.get("confidence") == "unverified":
        rep.issues.append(
            LintIssue(
                "warning",
                "op-table",
                f"the TensorRT {target} op table is unverified: "
                f"{table['source']}; see export/tensorrt/data/{lint_target(target).op_table}",
            )
        )
    _check_opsets(model, lint_target(target), rep)
    inferred = _check_structure(model, rep)
    elem = _elem_types(inferred) if inferred is not None else {}
    _check_ops(model.graph, table, elem, rep)
    _check_io(model.graph, elem, rep)
    return rep


def require_lint(rep: LintReport, artifact: str) -> None:
    if not rep.ok:
        first = rep.errors[:5]
        listed = "; ".join(
            f"{i.op or i.check} {i.node!r}: {i.reason}" if i.node else f"{i.check}: {i.reason}"
            for i in first
        )
        more = f" (+{len(rep.errors) - 5} more)" if len(rep.errors) > 5 else ""
        raise LintError(
            f"{artifact} would not build in TensorRT {rep.target}: {listed}{more}; change the "
            "model or, to keep the ONNX anyway, pass --engine none --allow-lint-fail"
        )
