"""The network-definition part of the TensorRT fake: the layers mtc adds after the ONNX parser
(the NMS tail of `runtime.tensorrt.nms.append_nms`), each with the output shapes TensorRT would
infer at build time and a numpy implementation the fake engine runs after ONNX Runtime.

Modelled on TensorRT's documentation, only as far as the real API goes:
- `add_constant(shape, array)`, `add_gather(data, indices, axis)` (+ `num_elementwise_dims`),
  `add_gather_v2(data, indices, GatherMode.ND)`, `add_elementwise`, `add_cast`, `add_shuffle`
  (`reshape_dims`, 0 copies the input dimension), `add_concatenation` (`axis`), `add_topk`,
  `add_reduce`, `add_scatter(data, indices, updates, ScatterMode.ND)`.
- `add_nms(boxes, scores, max_output_boxes_per_class)` -> INMSLayer: `bounding_box_format`,
  `topk_box_limit` (<= 5000), optional inputs 3 (IoU threshold) and 4 (score threshold); outputs
  SelectedIndices [M, 3] int32 (batch, class, box; M data-dependent) and NumOutputBoxes (0-d).
  Per image: (box, class) scores above the threshold, best first, cut at the TopK limit, then
  greedy per class: a box is dropped when its IoU with a kept box of its class is above the
  threshold; at most max_output_boxes_per_class per class.
- Plugins: `init_libnvinfer_plugins` registers `EfficientNMS_TRT` v1 (before it the registry has
  no creator); `creator.create_plugin(name, PluginFieldCollection)`; `add_plugin_v2(inputs,
  plugin)`. EfficientNMS: scores above `score_threshold` (not the background class), best first,
  the top 4096, greedy NMS (per class unless `class_agnostic`), up to `max_output_boxes` rows:
  num_detections [B, 1] int32, detection_boxes [B, K, 4], detection_scores [B, K],
  detection_classes [B, K] int32, zero after the count.
Ties in score keep candidate order (stable sort); TensorRT leaves their order unspecified.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

DATA_DEPENDENT = "?data"  # a dimension TensorRT only knows at run time
_NP = {"FLOAT": "float32", "HALF": "float16", "INT32": "int32", "INT64": "int64", "BOOL": "bool"}
_ids = itertools.count(1)
EFFICIENT_NMS_SELECTED = 4096  # efficientNMSParameters.h numSelectedBoxes
INMS_TOPK_MAX = 5000


@dataclass
class Tensor:
    """ITensor stand-in: `name` settable, `shape` with -1 where unknown at build time. A layer's
    output infers its dims when asked (attributes such as `reshape_dims` come after the add)."""

    name: str
    fixed_dims: tuple[Any, ...]  # ints and symbolic names (an input's dynamic dim, DATA_DEPENDENT)
    dtype: str  # DataType member name
    id: int = field(default_factory=lambda: next(_ids))
    onnx_name: str | None = None  # set for tensors the parser made
    producer: Any = None  # (Layer, output index)

    @property
    def dims(self) -> tuple[Any, ...]:
        if self.producer is None:
            return self.fixed_dims
        layer, i = self.producer
        return tuple(layer.infer(layer)[i])

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(d if isinstance(d, int) else -1 for d in self.dims)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dims": list(self.dims),
            "dtype": self.dtype,
            "id": self.id,
        }


class Layer:
    def __init__(self, op: str, inputs: list[Tensor], infer: Any, **params: Any) -> None:
        self.op, self.inputs, self.params, self.infer = op, list(inputs), params, infer
        self.outputs: list[Tensor] = []
        self.name = f"{op}_{next(_ids)}"

    def get_output(self, i: int) -> Tensor:
        return self.outputs[i]

    @property
    def num_outputs(self) -> int:
        return len(self.outputs)

    def set_input(self, index: int, tensor: Tensor) -> None:
        while len(self.inputs) <= index:
            self.inputs.append(None)  # type: ignore[arg-type]
        self.inputs[index] = tensor

    # attributes the builder sets, kept in params (what the plan records)
    def __setattr__(self, key: str, value: Any) -> None:
        if key in _ATTRS:
            self.params[key] = getattr(value, "name", value) if key in _ENUM_ATTRS else value
        else:
            object.__setattr__(self, key, value)

    def to_json(self, consts: dict[int, np.ndarray]) -> dict[str, Any]:
        d = {
            "op": self.op,
            "inputs": [t.id if t is not None else None for t in self.inputs],
            "outputs": [t.id for t in self.outputs],
            "params": {k: v for k, v in self.params.items() if k != "value"},
        }
        if self.op == "constant":
            arr = self.params["value"]
            d["params"]["value"] = {"dtype": str(arr.dtype), "shape": list(arr.shape)}
            d["params"]["value"]["data"] = arr.reshape(-1).tolist()
        return d


_ATTRS = {"num_elementwise_dims", "reshape_dims", "axis", "bounding_box_format", "topk_box_limit"}
_ENUM_ATTRS = {"bounding_box_format"}


def _broadcast(a: tuple[Any, ...], b: tuple[Any, ...]) -> tuple[Any, ...]:
    if len(a) != len(b):
        raise ValueError(f"elementwise: ranks differ {a} vs {b} (TensorRT needs equal ranks)")
    return tuple(y if x == 1 else x for x, y in zip(a, b))


def _reshape_dims(src: tuple[Any, ...], dims: tuple[int, ...]) -> tuple[Any, ...]:
    out = [src[i] if d == 0 else d for i, d in enumerate(dims)]
    if -1 in out:
        known = int(np.prod([d for d in out if isinstance(d, int) and d != -1]))
        if all(isinstance(d, int) for d in src):
            out[out.index(-1)] = int(np.prod(src)) // known
        else:
            rest = [d for d in src if d != 1]
            out[out.index(-1)] = rest[0] if len(rest) == 1 and known == 1 else DATA_DEPENDENT
    return tuple(out)


class NetworkLayers:
    """Mixed into the fake `Network`: layer factories with TensorRT's build-time shapes."""

    layers: list[Layer]
    outputs: list[Tensor]
    _m: Any

    def _add(self, op: str, inputs: list[Tensor], dtypes: list[str], infer: Any, **p: Any) -> Layer:
        """`infer(layer)` -> the output dims, from the inputs' dims and the layer's params."""
        layer = Layer(op, inputs, infer, **p)
        layer.outputs = [
            Tensor(f"({layer.name})[{i}]", (), t, id=self.new_id(), producer=(layer, i))
            for i, t in enumerate(dtypes)
        ]
        self.layers.append(layer)
        return layer

    @property
    def num_outputs(self) -> int:
        return len(self.outputs)

    def get_output(self, i: int) -> Tensor:
        return self.outputs[i]

    def new_id(self) -> int:
        """Tensor ids count per network, so the same build gives the same plan bytes."""
        self._last_id = getattr(self, "_last_id", 0) + 1
        return self._last_id

    def mark_output(self, t: Tensor) -> None:
        self.outputs.append(t)

    def unmark_output(self, t: Tensor) -> None:
        self.outputs.remove(t)

    def add_constant(self, shape: Any, weights: Any) -> Layer:
        arr = np.array(weights)
        if tuple(shape) != arr.shape:
            raise ValueError(f"add_constant: shape {tuple(shape)} != weights {arr.shape}")
        dt = {"float32": "FLOAT", "int32": "INT32", "float16": "HALF"}[str(arr.dtype)]
        return self._add("constant", [], [dt], lambda _: [arr.shape], value=arr)

    def add_gather(self, data: Tensor, indices: Tensor, axis: int) -> Layer:
        def infer(lay: Layer) -> list[tuple]:
            d, i = lay.inputs[0].dims, lay.inputs[1].dims
            ne, ax = lay.params["num_elementwise_dims"], lay.params["axis"]
            return [d[:ax] + i[ne:] + d[ax + 1 :]]

        p = {"axis": axis, "mode": "DEFAULT", "num_elementwise_dims": 0}
        return self._add("gather", [data, indices], [data.dtype], infer, **p)

    def add_gather_v2(self, data: Tensor, indices: Tensor, mode: Any) -> Layer:
        if mode.name != "ND":
            raise NotImplementedError("the fake models GatherMode.ND only")

        def infer(lay: Layer) -> list[tuple]:
            d, i = lay.inputs[0].dims, lay.inputs[1].dims
            if not isinstance(i[-1], int):
                raise ValueError("GatherND: the last indices dimension must be static")
            return [i[:-1] + d[i[-1] :]]

        return self._add("gather", [data, indices], [data.dtype], infer, axis=0, mode="ND")

    def add_elementwise(self, a: Tensor, b: Tensor, op: Any) -> Layer:
        dtype = "BOOL" if op.name in ("EQUAL", "GREATER", "LESS") else a.dtype
        if a.dtype != b.dtype:
            raise TypeError(f"elementwise {op.name}: {a.dtype} vs {b.dtype}")
        _broadcast(a.dims, b.dims)  # TensorRT checks ranks when the layer is added

        def infer(lay: Layer) -> list[tuple]:
            return [_broadcast(lay.inputs[0].dims, lay.inputs[1].dims)]

        return self._add("elementwise", [a, b], [dtype], infer, fn=op.name)

    def add_cast(self, x: Tensor, to_type: Any) -> Layer:
        return self._add(
            "cast", [x], [to_type.name], lambda lay: [lay.inputs[0].dims], to=to_type.name
        )

    def add_shuffle(self, x: Tensor) -> Layer:
        def infer(lay: Layer) -> list[tuple]:
            r = lay.params["reshape_dims"]
            src = lay.inputs[0].dims
            return [src if r is None else _reshape_dims(src, tuple(r))]

        return self._add("shuffle", [x], [x.dtype], infer, reshape_dims=None)

    def add_concatenation(self, inputs: list[Tensor]) -> Layer:
        def infer(lay: Layer) -> list[tuple]:
            ins, ax = [t.dims for t in lay.inputs], lay.params["axis"]
            if len({d[:ax] + d[ax + 1 :] for d in ins}) != 1:
                raise ValueError(f"concatenation: dims differ off axis {ax}: {ins}")
            return [ins[0][:ax] + (sum(d[ax] for d in ins),) + ins[0][ax + 1 :]]

        return self._add("concat", list(inputs), [inputs[0].dtype], infer, axis=0)

    def add_topk(self, x: Tensor, op: Any, k: int, axes: int) -> Layer:
        axis = axes.bit_length() - 1
        if k > 3840:
            raise ValueError(f"add_topk: K {k} > 3840")

        def infer(lay: Layer) -> list[tuple]:
            d = lay.inputs[0].dims
            out = d[:axis] + (k,) + d[axis + 1 :]
            return [out, out]

        return self._add("topk", [x], [x.dtype, "INT32"], infer, k=k, axis=axis, fn=op.name)

    def add_reduce(self, x: Tensor, op: Any, axes: int, keep_dims: bool) -> Layer:
        ax = [i for i in range(len(x.dims)) if axes >> i & 1]

        def infer(lay: Layer) -> list[tuple]:
            d = lay.inputs[0].dims
            return [tuple(1 if i in ax else v for i, v in enumerate(d) if keep_dims or i not in ax)]

        return self._add("reduce", [x], [x.dtype], infer, axes=ax, keep=keep_dims, fn=op.name)

    def add_scatter(self, data: Tensor, indices: Tensor, updates: Tensor, mode: Any) -> Layer:
        if mode.name != "ND":
            raise NotImplementedError("the fake models ScatterMode.ND only")
        if updates.dtype != data.dtype:
            raise TypeError(f"scatter: updates {updates.dtype} vs data {data.dtype}")
        return self._add(
            "scatter", [data, indices, updates], [data.dtype], lambda lay: [lay.inputs[0].dims]
        )

    def add_nms(self, boxes: Tensor, scores: Tensor, max_output_boxes_per_class: Tensor) -> Layer:
        if len(boxes.dims) != 3 or boxes.dims[2] != 4 or len(scores.dims) != 3:
            raise ValueError(f"add_nms: boxes {boxes.dims} / scores {scores.dims}")
        layer = self._add(
            "nms",
            [boxes, scores, max_output_boxes_per_class],
            ["INT32", "INT32"],
            lambda _: [(DATA_DEPENDENT, 3), ()],
        )
        layer.params.update(bounding_box_format="CORNER_PAIRS", topk_box_limit=INMS_TOPK_MAX)
        return layer

    def add_plugin_v2(self, inputs: list[Tensor], plugin: Any) -> Layer:
        if plugin.type != "EfficientNMS_TRT":
            raise NotImplementedError(plugin.type)
        boxes, scores = inputs
        if boxes.dims[:2] != scores.dims[:2] or boxes.dims[2] != 4:
            raise ValueError(f"EfficientNMS_TRT: boxes {boxes.dims} / scores {scores.dims}")
        k = plugin.fields["max_output_boxes"]

        def infer(lay: Layer) -> list[tuple]:
            b = lay.inputs[0].dims[0]
            return [(b, 1), (b, k, 4), (b, k), (b, k)]

        dtypes = ["INT32", boxes.dtype, boxes.dtype, "INT32"]
        return self._add("efficient_nms", list(inputs), dtypes, infer, **plugin.fields)

    def topological_layers(self) -> list[Layer]:
        """Layers in an order that runs each after its inputs' producers (inputs can be set after
        a layer is added, e.g. INMSLayer's thresholds: TensorRT sorts the graph when it builds)."""
        made = {t.id for t in getattr(self, "parsed", [])}
        todo, order = list(self.layers), []
        while todo:
            ready = [ly for ly in todo if all(t is None or t.id in made for t in ly.inputs)]
            if not ready:
                raise ValueError("network has a cycle or a tensor no layer produces")
            for ly in ready:
                order.append(ly)
                todo.remove(ly)
                made.update(t.id for t in ly.outputs)
        return order

    def layer_problem(self) -> str | None:
        for layer in self.layers:
            if layer.op == "nms":
                if len(layer.inputs) > 3 and layer.inputs[3].shape != ():
                    return "INMSLayer: IoUThreshold must be a 0-D tensor"
                if not 0 < layer.params["topk_box_limit"] <= INMS_TOPK_MAX:
                    return f"INMSLayer: TopK box limit must be in 1..{INMS_TOPK_MAX}"
                if layer.inputs[2].dtype != "INT32" or layer.inputs[2].shape != ():
                    return "INMSLayer: MaxOutputBoxesPerClass must be a 0-D int32 tensor"
        return None


# -- run time --------------------------------------------------------------------------------------
def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    x1 = np.maximum(box[0], others[:, 0])
    y1 = np.maximum(box[1], others[:, 1])
    x2 = np.minimum(box[2], others[:, 2])
    y2 = np.minimum(box[3], others[:, 3])
    inter = (x2 - x1).clip(0) * (y2 - y1).clip(0)
    area = (box[2] - box[0]).clip(0) * (box[3] - box[1]).clip(0)
    areas = (others[:, 2] - others[:, 0]).clip(0) * (others[:, 3] - others[:, 1]).clip(0)
    return inter / np.maximum(area + areas - inter, 1e-12)


def _greedy(
    boxes: np.ndarray, pairs: np.ndarray, iou: float, per_class: int, total: int, agnostic: bool
) -> list[tuple[int, int]]:
    """pairs [P, 2] (box, class) best first -> kept pairs in that order."""
    kept: list[tuple[int, int]] = []
    counts: dict[int, int] = {}
    for box, cls in pairs.tolist():
        same = [b for b, c in kept if agnostic or c == cls]
        if same and (_iou(boxes[box], boxes[same]) > iou).any():
            continue
        if counts.get(cls, 0) >= per_class:
            continue
        kept.append((box, cls))
        counts[cls] = counts.get(cls, 0) + 1
        if len(kept) >= total:
            break
    return kept


def _candidates(scores: np.ndarray, thr: float, limit: int, skip: int = -1) -> np.ndarray:
    """(box, class) pairs scoring above `thr`, best first (stable), the first `limit`."""
    box, cls = np.nonzero(scores > thr)
    keep = cls != skip
    box, cls = box[keep], cls[keep]
    order = np.argsort(-scores[box, cls], kind="stable")[:limit]
    return np.stack([box[order], cls[order]], 1)


def _run_nms(layer: dict[str, Any], ins: list[Any]) -> list[np.ndarray]:
    boxes, scores, max_per_class = ins[0], ins[1], int(ins[2])
    iou = float(ins[3]) if len(ins) > 3 and ins[3] is not None else 0.0
    thr = float(ins[4]) if len(ins) > 4 and ins[4] is not None else 0.0
    rows = []
    for b in range(len(boxes)):
        pairs = _candidates(scores[b], thr, layer["params"]["topk_box_limit"])
        for box, cls in _greedy(boxes[b], pairs, iou, max_per_class, 1 << 30, False):
            rows.append((b, cls, box))
    sel = np.array(rows, np.int32).reshape(-1, 3)
    return [sel, np.array(len(sel), np.int32)]


def _run_efficient(layer: dict[str, Any], ins: list[Any]) -> list[np.ndarray]:
    p, (boxes, scores) = layer["params"], ins
    k = p["max_output_boxes"]
    n = len(boxes)
    num = np.zeros((n, 1), np.int32)
    out_b, out_s = np.zeros((n, k, 4), boxes.dtype), np.zeros((n, k), scores.dtype)
    out_c = np.zeros((n, k), np.int32)
    for b in range(n):
        pairs = _candidates(scores[b], p["score_threshold"], EFFICIENT_NMS_SELECTED)
        pairs = pairs[pairs[:, 1] != p["background_class"]]
        kept = _greedy(boxes[b], pairs, p["iou_threshold"], k, k, bool(p["class_agnostic"]))
        for j, (box, cls) in enumerate(kept):
            out_b[b, j], out_s[b, j], out_c[b, j] = boxes[b, box], scores[b, box, cls], cls
        num[b, 0] = len(kept)
    return [num, out_b, out_s, out_c]


def _gather(p: dict[str, Any], data: np.ndarray, idx: np.ndarray) -> np.ndarray:
    if p["mode"] == "ND":
        return data[tuple(np.moveaxis(idx, -1, 0))]
    ax = p["axis"]
    if p.get("num_elementwise_dims", 0) == 0:
        return np.take(data, idx, axis=ax)
    return np.stack([np.take(data[i], idx[i], axis=ax - 1) for i in range(len(data))])


def _reshape(src: np.ndarray, dims: list[int]) -> np.ndarray:
    return src.reshape([src.shape[i] if d == 0 else d for i, d in enumerate(dims)])


_ELEMENTWISE = {"EQUAL": np.equal, "GREATER": np.greater, "LESS": np.less, "PROD": np.multiply}


def run_layer(layer: dict[str, Any], ins: list[Any]) -> list[np.ndarray]:
    op, p = layer["op"], layer["params"]
    if op == "constant":
        v = p["value"]
        return [np.array(v["data"], v["dtype"]).reshape(v["shape"])]
    if op == "gather":
        return [_gather(p, ins[0], ins[1])]
    if op == "elementwise":
        return [_ELEMENTWISE[p["fn"]](ins[0], ins[1])]
    if op == "cast":
        return [ins[0].astype(_NP[p["to"]])]
    if op == "shuffle":
        return [ins[0] if p["reshape_dims"] is None else _reshape(ins[0], p["reshape_dims"])]
    if op == "concat":
        return [np.concatenate(ins, axis=p["axis"])]
    if op == "topk":
        order = np.argsort(-ins[0], axis=p["axis"], kind="stable")
        order = np.take(order, np.arange(p["k"]), axis=p["axis"])
        return [np.take_along_axis(ins[0], order, p["axis"]), order.astype(np.int32)]
    if op == "reduce":
        return [ins[0].sum(axis=tuple(p["axes"]), keepdims=p["keep"]).astype(ins[0].dtype)]
    if op == "scatter":
        out = ins[0].copy()
        out[tuple(np.moveaxis(ins[1], -1, 0))] = ins[2]
        return [out]
    if op == "nms":
        return _run_nms(layer, ins)
    if op == "efficient_nms":
        return _run_efficient(layer, ins)
    raise NotImplementedError(op)


# -- plugins ---------------------------------------------------------------------------------------
class PluginField:
    def __init__(self, name: str, data: Any, type: Any) -> None:  # noqa: A002
        self.name, self.data, self.type = name, np.asarray(data), type


class PluginFieldCollection(list):
    pass


@dataclass
class Plugin:
    type: str
    name: str
    fields: dict[str, Any]


EFFICIENT_NMS_FIELDS = {
    "score_threshold": ("FLOAT32", None),
    "iou_threshold": ("FLOAT32", None),
    "max_output_boxes": ("INT32", None),
    "background_class": ("INT32", -1),
    "score_activation": ("INT32", 0),
    "class_agnostic": ("INT32", 0),
    "box_coding": ("INT32", 0),
}


class EfficientNmsCreator:
    name, plugin_version, plugin_namespace = "EfficientNMS_TRT", "1", ""

    def create_plugin(self, name: str, fc: PluginFieldCollection) -> Plugin | None:
        fields = {}
        for f in fc:
            want = EFFICIENT_NMS_FIELDS.get(f.name)
            if want is None or f.type.name != want[0]:
                return None  # TensorRT: the creator logs and returns nullptr
            v = f.data.reshape(-1)[0]
            fields[f.name] = float(v) if want[0] == "FLOAT32" else int(v)
        for key, (_, default) in EFFICIENT_NMS_FIELDS.items():
            if key not in fields and default is None:
                return None
            fields.setdefault(key, default)
        if fields["score_activation"] or fields["box_coding"]:
            raise NotImplementedError("the fake runs score_activation 0, box_coding 0 only")
        return Plugin(self.name, name, fields)


class PluginRegistry:
    def __init__(self) -> None:
        self.creators: dict[tuple[str, str, str], Any] = {}

    def register_standard(self) -> None:
        c = EfficientNmsCreator()
        self.creators[(c.name, c.plugin_version, c.plugin_namespace)] = c

    def get_creator(self, name: str, version: str, namespace: str = "") -> Any:
        return self.creators.get((name, version, namespace))

    get_plugin_creator = get_creator
