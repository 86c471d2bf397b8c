"""Export a model's latency probes: every conv layer cut out of the model's own ONNX export
(the conv with BN folded in and the element-wise activation behind it), plus whole-model
anchors (the model and a copy with every prunable group thinned to half, which calibrate the
table, and a held-out copy with every group at its own random width), into a probe bundle
(`runtime.latency_model.bundle`) that a torch-free command times on the deploy machine.

Which widths of a layer can change, and so which grid each probe gets, comes from the same
dependency graph the pruner uses (protected layers and prediction outputs stay fixed)."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compressor.latency.onnx_io import INPUT_NAME, WRAPPER_PREFIX, export_onnx, import_onnx
from compressor.pruning.graph import PruneGraph
from compressor.pruning.group import IN, OUT
from runtime.errors import MtcError
from runtime.fileio import atomic_write_bytes, atomic_write_text
from runtime.latency_model.bundle import BUNDLE_FILE, BUNDLE_FORMAT, BUNDLE_VERSION
from runtime.latency_model.table import grid_widths

GRID_FRACTIONS = (0.25, 0.5, 0.75)
THIN_FRACTION = 0.5
MIXED_SEED = 0  # the held-out whole network: every group at its own random width
# Single-input element-wise ops that fuse with (or stream right behind) a conv.
UNARY = {
    "Relu",
    "LeakyRelu",
    "HardSwish",
    "HardSigmoid",
    "Sigmoid",
    "Tanh",
    "Elu",
    "Selu",
    "Softplus",
    "Clip",
    "PRelu",
    "Gelu",
    "Mish",
}
PROBE_INPUT = "x"


class ProbeExportError(MtcError):
    """The model's layers could not be turned into latency probes."""


@dataclass(frozen=True)
class ConvLayer:
    """A conv as it runs at the probe input size."""

    name: str
    cin: int
    cout: int
    in_hw: tuple[int, int]
    out_hw: tuple[int, int]
    depthwise: bool
    transposed: bool
    signature: str


def probed_layers(
    model: nn.Module, input_hw: tuple[int, int], in_channels: int = 3
) -> dict[str, ConvLayer]:
    """Every 2-D conv / transposed conv that runs in `model`'s forward, with its spatial sizes."""
    found: dict[str, ConvLayer] = {}
    names = {m: n for n, m in model.named_modules()}

    def hook(m: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        n = names[m]
        if n in found or not isinstance(out, torch.Tensor) or out.dim() != 4:
            return
        x = inp[0]
        depthwise = m.groups > 1 and m.groups == m.in_channels == m.out_channels
        sig = (
            f"{type(m).__name__} k{tuple(m.kernel_size)} s{tuple(m.stride)} p{m.padding} "
            f"d{tuple(m.dilation)} g{'dw' if depthwise else m.groups} "
            f"{m.in_channels}->{m.out_channels} @{tuple(x.shape[-2:])}"
        )
        found[n] = ConvLayer(
            n,
            m.in_channels,
            m.out_channels,
            (int(x.shape[-2]), int(x.shape[-1])),
            (int(out.shape[-2]), int(out.shape[-1])),
            depthwise,
            isinstance(m, nn.ConvTranspose2d),
            sig,
        )

    kinds = (nn.Conv2d, nn.ConvTranspose2d)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, kinds)]
    was = model.training
    ref = next(model.parameters(), torch.zeros(()))
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, in_channels, *input_hw, dtype=ref.dtype))
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    return found


def varying_sides(graph: PruneGraph) -> dict[str, tuple[bool, bool]]:
    """layer -> (input width can change, output width can change)."""
    sides: dict[str, list[bool]] = {}
    for g in graph.groups:
        for s in g.slices:
            if s.kind in (IN, OUT):
                sides.setdefault(s.module, [False, False])[0 if s.kind == IN else 1] = True
    mods = dict(graph.model.named_modules())
    for name, (vi, vo) in list(sides.items()):
        m = mods.get(name)
        if isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels:
            sides[name] = [vi or vo, vi or vo]  # depthwise: in and out are the same channels
    return {n: (v[0], v[1]) for n, v in sides.items()}


def fingerprint(layers: dict[str, ConvLayer], input_hw: tuple[int, int], batch: int) -> str:
    """Identifies the probed architecture at one input size and batch."""
    rows = sorted((n, ly.signature) for n, ly in layers.items())
    blob = json.dumps({"layers": rows, "input_hw": list(input_hw), "batch": batch})
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def module_of_node(node_name: str, names: set[str]) -> str | None:
    """'/model/model.13/m/m.0/cv1/conv/Conv' -> 'model.13.m.0.cv1.conv'. The TorchScript
    exporter names each scope relative to the closest ancestor whose forward was entered (a
    Sequential that is iterated rather than called leaves no scope of its own), so each part is
    joined to the deepest prefix of the path so far that makes a module name."""
    parts = [p for p in node_name.split("/") if p]
    if len(parts) < 3 or parts[0] != WRAPPER_PREFIX:
        return None
    path: list[str] = []
    for part in parts[1:-1]:
        for cut in range(len(path), -1, -1):
            cand = ".".join([*path[:cut], part])
            if cand in names:
                path = cand.split(".")
                break
        else:
            return None
    return ".".join(path)


def _consumers(graph: Any) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for node in graph.node:
        for i in node.input:
            out.setdefault(i, []).append(node)
    return out


def _activation_chain(node: Any, consumers: dict[str, list[Any]], outputs: set[str]) -> list[Any]:
    """Element-wise nodes streaming from a conv's output: unary ops, and x * sigmoid(x)."""
    chain: list[Any] = []
    tensor = node.output[0]
    while tensor not in outputs:
        users = consumers.get(tensor, [])
        if len(users) == 1 and users[0].op_type in UNARY:
            chain.append(users[0])
            tensor = users[0].output[0]
            continue
        ops = sorted(u.op_type for u in users)
        if ops == ["Mul", "Sigmoid"]:  # SiLU
            sig = next(u for u in users if u.op_type == "Sigmoid")
            mul = next(u for u in users if u.op_type == "Mul")
            if sig.output[0] in mul.input:
                chain += [sig, mul]
                tensor = mul.output[0]
                continue
        break
    return chain


def _probe_model(onnx: Any, full: Any, node: Any, chain: list[Any], layer: ConvLayer) -> Any:
    from onnx import TensorProto, helper

    inits = {i.name: i for i in full.graph.initializer}
    consts = {n.output[0]: n for n in full.graph.node if n.op_type == "Constant"}
    # The exporter routes some weights through Identity nodes: read through them.
    alias = {n.output[0]: n.input[0] for n in full.graph.node if n.op_type == "Identity"}
    nodes = [copy.deepcopy(node), *(copy.deepcopy(n) for n in chain)]
    nodes[0].input[0] = PROBE_INPUT
    for n in nodes:
        for k, name in enumerate(n.input):
            while name in alias and name not in inits and name not in consts:
                name = alias[name]
            n.input[k] = name
    last = nodes[-1].output[0]
    used_inits, used_consts = [], []
    for n in nodes:
        for i in n.input:
            if i in inits and inits[i] not in used_inits:
                used_inits.append(inits[i])
            elif i in consts and consts[i] not in used_consts:
                used_consts.append(copy.deepcopy(consts[i]))
    x = helper.make_tensor_value_info(PROBE_INPUT, TensorProto.FLOAT, [1, layer.cin, *layer.in_hw])
    y = helper.make_tensor_value_info(last, TensorProto.FLOAT, [1, layer.cout, *layer.out_hw])
    g = helper.make_graph(used_consts + nodes, f"probe_{layer.name}", [x], [y], list(used_inits))
    # Constant nodes must come first; the conv must be node 0 for the slicer: put consts after
    # it when they only feed the activations (a conv has no Constant inputs after folding).
    del g.node[:]
    g.node.extend(nodes[:1] + used_consts + nodes[1:])
    m = helper.make_model(g, opset_imports=list(full.opset_import))
    m.ir_version = full.ir_version
    return m


def _set_batch(m: Any, batch: int) -> Any:
    for v in list(m.graph.input) + list(m.graph.output):
        dims = v.type.tensor_type.shape.dim
        if dims:
            dims[0].dim_value = batch
    return m


def thin_model(
    model: nn.Module,
    example: torch.Tensor,
    protected: Sequence[str] = (),
    protect_outputs: bool = True,
    fraction: float = THIN_FRACTION,
    round_to: int = 8,
    min_width: int = 8,
    seed: int | None = None,
) -> nn.Module:
    """A copy with every prunable group cut to `fraction` of its width (last channels removed):
    the second anchor of the latency fit. With a `seed`, each group keeps its own random share
    in [fraction, 1) instead: a non-uniform cut like a plan's, the held-out whole network."""
    thin = copy.deepcopy(model)
    graph = PruneGraph(thin, example, protected, protect_outputs)
    rng = random.Random(seed)
    for g in graph.groups:
        share = fraction if seed is None else rng.uniform(fraction, 1.0)
        keep = max(int(math.ceil(g.size * share / round_to)) * round_to, min_width)
        if keep < g.size:
            graph.execute(g, list(range(keep, g.size)))
    return thin


def export_probe_bundle(
    model: nn.Module,
    out: str | Path,
    input_hw: tuple[int, int],
    batch: int = 1,
    protected: Sequence[str] = (),
    protect_outputs: bool = True,
    round_to: int = 8,
    min_width: int = 8,
    in_channels: int = 3,
    model_name: str = "",
    fp16_anchor: Callable[[Any], Any] | None = None,
) -> Path:
    """Write the probe bundle of `model` at `input_hw` and `batch` into folder `out`.
    `fp16_anchor`: ONNX -> FP16 ONNX (the export's converter); when given, the anchors are also
    written in FP16, which strongly typed TensorRT (11.x) needs to time an FP16 model."""
    onnx = import_onnx()
    out = Path(out)
    layers = probed_layers(model, input_hw, in_channels)
    if not layers:
        raise ProbeExportError(f"{type(model).__name__} has no 2-D conv layer to probe")
    example = torch.zeros(1, in_channels, *input_hw)
    graph = PruneGraph(model, example, protected, protect_outputs)
    sides = varying_sides(graph)
    full = export_onnx(model, input_hw, batch, in_channels)
    consumers = _consumers(full.graph)
    outputs = {o.name for o in full.graph.output}
    probes: dict[str, dict[str, Any]] = {}
    by_sig: dict[str, str] = {}
    low = -(-min_width // round_to) * round_to  # the narrowest width a plan can keep
    layer_rows: dict[str, dict[str, Any]] = {}
    names = {n for n, _ in model.named_modules() if n}
    for node in full.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose"):
            continue
        name = module_of_node(node.name, names)
        if name not in layers or name in layer_rows:
            continue
        ly = layers[name]
        vi, vo = sides.get(name, (False, False))
        chain = _activation_chain(node, consumers, outputs)
        sig = f"{ly.signature} +{'+'.join(n.op_type for n in chain)} vary{int(vi)}{int(vo)}"
        if sig not in by_sig:
            pid = f"p{len(probes):03d}"
            by_sig[sig] = pid
            probe = _probe_model(onnx, full, node, chain, ly)
            rel = f"probes/{pid}.onnx"
            atomic_write_bytes(out / rel, _set_batch(probe, batch).SerializeToString())
            gi = grid_widths(ly.cin, GRID_FRACTIONS, round_to, low) if vi else [ly.cin]
            go = grid_widths(ly.cout, GRID_FRACTIONS, round_to, low) if vo else [ly.cout]
            if ly.depthwise:
                gi = go = sorted(set(gi) | set(go))
            probes[pid] = {
                "file": rel,
                "cin": ly.cin,
                "cout": ly.cout,
                "depthwise": ly.depthwise,
                "transposed": ly.transposed,
                "grid_in": gi,
                "grid_out": go,
                "signature": sig,
            }
        layer_rows[name] = {
            "probe": by_sig[sig],
            "cin": ly.cin,
            "cout": ly.cout,
            "in_hw": list(ly.in_hw),
            "out_pixels": ly.out_hw[0] * ly.out_hw[1],
            "vary_in": vi,
            "vary_out": vo,
        }
    used = {n: layers[n] for n in layer_rows}
    thin = thin_model(
        model, example, protected, protect_outputs, round_to=round_to, min_width=min_width
    )
    mixed = thin_model(
        model, example, protected, protect_outputs, 0.25, round_to, min_width, seed=MIXED_SEED
    )
    anchors = [{"name": "full", "file": "anchors/full.onnx", "widths": {}}]
    for name, m in (("thin", thin), ("mixed", mixed)):
        widths = probed_layers(m, input_hw, in_channels)
        anchors.append(
            {
                "name": name,
                "file": f"anchors/{name}.onnx",
                "widths": {n: [widths[n].cin, widths[n].cout] for n in used},
                **({"role": "holdout"} if name == "mixed" else {}),
            }
        )
    protos = (full, export_onnx(thin, input_hw, batch, in_channels))
    protos += (export_onnx(mixed, input_hw, batch, in_channels),)
    for anchor, proto in zip(anchors, protos):
        atomic_write_bytes(out / anchor["file"], proto.SerializeToString())
        if fp16_anchor is not None:
            anchor["file_fp16"] = f"anchors/{anchor['name']}_fp16.onnx"
            atomic_write_bytes(out / anchor["file_fp16"], fp16_anchor(proto).SerializeToString())
    manifest = {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "model": fingerprint(used, input_hw, batch),
        "model_name": model_name,
        "input_hw": list(input_hw),
        "batch": batch,
        "in_channels": in_channels,
        "anchor_input": INPUT_NAME,
        "probe_input": PROBE_INPUT,
        "protected": list(protected),
        "grid": {"round_to": round_to, "min_width": min_width},
        "layers": layer_rows,
        "probes": probes,
        "anchors": anchors,
    }
    atomic_write_text(out / BUNDLE_FILE, json.dumps(manifest, indent=1) + "\n")
    return out
