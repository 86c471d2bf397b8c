"""A probe bundle: what the torch side exports for timing a model on the machine that will run it.

    <bundle>/probes.json            layers, probes (grid of widths each), anchors, model fingerprint
    <bundle>/probes/<id>.onnx       one layer at full width: its conv and the activation behind it,
                                    cut out of the model's own ONNX export (weights included)
    <bundle>/anchors/<name>.onnx    whole models: the unpruned one and a uniformly thinned one

A probe is timed at every (c_in, c_out) of its grid; the narrower variants are made here by
slicing the full-width probe's weights, so the bundle stays the size of the model. This needs the
`onnx` package (pure Python, wheels for aarch64 too) but never torch."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtime.errors import MtcError

BUNDLE_FORMAT = "mtc-latency-probes"
BUNDLE_VERSION = 1
BUNDLE_FILE = "probes.json"


class ProbeBundleError(MtcError):
    """A probe bundle folder that is missing, incomplete or not ours."""


def import_onnx() -> Any:
    try:
        import onnx
        from onnx import numpy_helper  # noqa: F401
    except ImportError:
        raise ProbeBundleError(
            "timing latency probes needs the onnx package (torch-free): pip install 'onnx>=1.16'"
        ) from None
    return onnx


@dataclass
class ProbeSpec:
    id: str
    file: str
    cin: int
    cout: int
    depthwise: bool
    transposed: bool
    grid_in: list[int]
    grid_out: list[int]
    signature: str = ""

    def cells(self) -> Iterator[tuple[int, int, int, int]]:
        """(row, col, c_in, c_out) of every grid cell; depthwise probes only where c_in == c_out."""
        for i, ci in enumerate(self.grid_in):
            for j, co in enumerate(self.grid_out):
                if self.depthwise and ci != co:
                    continue
                yield i, j, ci, co


@dataclass
class AnchorSpec:
    name: str
    file: str
    widths: dict[str, tuple[int, int]] = field(default_factory=dict)
    file_fp16: str | None = None  # FP16 ONNX of the same model, for strongly typed TensorRT
    role: str = "fit"  # fit: calibrates the table; holdout: only scores its prediction


@dataclass
class ProbeBundle:
    root: Path
    model: str
    model_name: str
    input_hw: tuple[int, int]
    batch: int
    in_channels: int
    layers: dict[str, dict[str, Any]]
    probes: dict[str, ProbeSpec]
    anchors: list[AnchorSpec]
    anchor_input: str = "images"
    probe_input: str = "x"
    grid: dict[str, int] = field(default_factory=dict)  # round_to / min_width of the grid

    @property
    def n_cells(self) -> int:
        return sum(len(list(p.cells())) for p in self.probes.values())

    def probe_bytes(self, spec: ProbeSpec, cin: int, cout: int, fp16: bool = False) -> bytes:
        """The probe's ONNX at (cin, cout): weights sliced to the first channels."""
        onnx = import_onnx()
        model = self._load(spec.file)
        sliced = slice_probe(onnx, model, spec, cin, cout)
        if fp16:
            sliced = to_fp16(onnx, sliced)
        return bytes(sliced.SerializeToString())

    def anchor_bytes(self, anchor: AnchorSpec, fp16: bool = False) -> bytes:
        if fp16 and not anchor.file_fp16:
            raise ProbeBundleError(
                f"probe bundle {self.root} has no FP16 ONNX of anchor {anchor.name!r}, which a "
                "strongly typed TensorRT (11.x) needs: export the bundle with mtc-probes "
                "--fp16-anchors"
            )
        path = self.root / (anchor.file_fp16 if fp16 and anchor.file_fp16 else anchor.file)
        if not path.is_file():
            raise ProbeBundleError(f"probe bundle {self.root} lacks {anchor.file}: export it again")
        return path.read_bytes()

    def _load(self, rel: str) -> Any:
        onnx = import_onnx()
        path = self.root / rel
        if not path.is_file():
            raise ProbeBundleError(f"probe bundle {self.root} lacks {rel}: export it again")
        try:
            return onnx.load_from_string(path.read_bytes())
        except Exception as e:  # protobuf's DecodeError and friends
            raise ProbeBundleError(
                f"{path} is not a readable ONNX probe ({type(e).__name__})"
            ) from None

    def digest(self) -> str:
        """Identifies the bundle's content for resuming a measurement."""
        return hashlib.sha256((self.root / BUNDLE_FILE).read_bytes()).hexdigest()[:16]


def load_bundle(root: str | Path) -> ProbeBundle:
    r = Path(root)
    f = r / BUNDLE_FILE
    if not f.is_file():
        raise ProbeBundleError(
            f"{r} is not a probe bundle (no {BUNDLE_FILE}); export one with mtc-probes"
        )
    try:
        d = json.loads(f.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProbeBundleError(f"{f} is not JSON ({type(e).__name__})") from None
    if not isinstance(d, dict) or d.get("format") != BUNDLE_FORMAT:
        raise ProbeBundleError(f"{f} is not an mtc probe bundle (format {BUNDLE_FORMAT!r})")
    if d.get("version") != BUNDLE_VERSION:
        raise ProbeBundleError(
            f"{f} is bundle version {d.get('version')!r}; this mtc reads {BUNDLE_VERSION}"
        )
    try:
        hw = [int(v) for v in d["input_hw"]]
        return ProbeBundle(
            root=r,
            model=str(d["model"]),
            model_name=str(d.get("model_name", "")),
            input_hw=(hw[0], hw[1]),
            batch=int(d["batch"]),
            in_channels=int(d.get("in_channels", 3)),
            layers={str(k): dict(v) for k, v in d["layers"].items()},
            probes={str(k): ProbeSpec(id=str(k), **v) for k, v in d["probes"].items()},
            anchors=[
                AnchorSpec(
                    str(a["name"]),
                    str(a["file"]),
                    {str(k): (int(v[0]), int(v[1])) for k, v in a.get("widths", {}).items()},
                    a.get("file_fp16"),
                    str(a.get("role", "fit")),
                )
                for a in d["anchors"]
            ],
            anchor_input=str(d.get("anchor_input", "images")),
            probe_input=str(d.get("probe_input", "x")),
            grid={str(k): int(v) for k, v in d.get("grid", {}).items()},
        )
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise ProbeBundleError(f"{f} is malformed ({type(e).__name__}: {e})") from None


def _slice_init(nh: Any, init: Any, index: tuple) -> Any:
    arr = nh.to_array(init)
    return nh.from_array(np.ascontiguousarray(arr[index]), init.name)


def slice_probe(onnx: Any, model: Any, spec: ProbeSpec, cin: int, cout: int) -> Any:
    """Copy of a full-width probe narrowed to `cin` inputs and `cout` outputs (the first ones).
    Conv weights are [out, in/groups, k...], ConvTranspose weights [in, out/groups, k...]; every
    other initializer whose first dimension is the full output width (bias, PReLU slopes) is cut
    to `cout`."""
    from onnx import numpy_helper as nh

    m = copy.deepcopy(model)
    g = m.graph
    conv = g.node[0]
    weight_name = conv.input[1]
    inits = {i.name: k for k, i in enumerate(g.initializer)}
    w = g.initializer[inits[weight_name]]
    if spec.depthwise:
        idx: tuple = (slice(0, cout),)
        for a in conv.attribute:
            if a.name == "group":
                a.i = cout
    elif spec.transposed:
        idx = (slice(0, cin), slice(0, cout))
    else:
        idx = (slice(0, cout), slice(0, cin))
    g.initializer[inits[weight_name]].CopyFrom(_slice_init(nh, w, idx))
    for name, k in inits.items():
        if name == weight_name:
            continue
        init = g.initializer[k]
        if len(init.dims) >= 1 and init.dims[0] == spec.cout and spec.cout != 1:
            g.initializer[k].CopyFrom(_slice_init(nh, init, (slice(0, cout),)))
    g.input[0].type.tensor_type.shape.dim[1].dim_value = cin
    for out in g.output:
        out.type.tensor_type.shape.dim[1].dim_value = cout
    del g.value_info[:]
    return m


def to_fp16(onnx: Any, model: Any) -> Any:
    """Probe with FP16 weights and I/O: what a strongly typed TensorRT 11 network needs. A probe
    is a conv and element-wise activations, which FP16 represents without special cases."""
    from onnx import TensorProto
    from onnx import numpy_helper as nh

    m = copy.deepcopy(model)
    g = m.graph
    for k, init in enumerate(g.initializer):
        if init.data_type == TensorProto.FLOAT:
            arr = nh.to_array(init).astype(np.float16)
            g.initializer[k].CopyFrom(nh.from_array(arr, init.name))
    for v in list(g.input) + list(g.output):
        if v.type.tensor_type.elem_type == TensorProto.FLOAT:
            v.type.tensor_type.elem_type = TensorProto.FLOAT16
    for node in g.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value" and a.t.data_type == TensorProto.FLOAT:
                    a.t.CopyFrom(nh.from_array(nh.to_array(a.t).astype(np.float16), a.t.name))
    return m
