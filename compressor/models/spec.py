"""The model spec: everything downstream needs to know about a multi-task model, declared once in
the model's own file and registered with it (`register_model(name, spec=SPEC)`; the lookups
by name, `get_spec` / `spec_of`, live in compressor.models.registry).

Training, compression, checkpoints, export (wrapper, output names, sidecar), the runtime's
postprocess, metrics, overlays and the demo read the spec; nothing outside a model's file names a
model. A model that is not registered passes its spec to the API explicitly (`spec=`), or carries
it as `model.model_spec`.

Task names are the data set's label kinds (`det`, `drivable`, `lane` in the BDD100K/YOLOP layout):
a model declares which of them it predicts and of what kind.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from torch import nn

from compressor.losses.errors import LossConfigError
from runtime.decoders import check_decoder_name
from runtime.errors import MtcError
from runtime.input_size import MAX_SIDE, memory_estimate, nearest_valid
from runtime.spec import PAD_VALUE

KIND_DETECTION = "detection"
KIND_SEGMENTATION = "segmentation"
TASK_KINDS: tuple[str, ...] = (KIND_DETECTION, KIND_SEGMENTATION)
COLORS: tuple[str, ...] = ("RGB", "BGR")

LossFn = Callable[[dict, dict], dict]


class ModelSpecError(MtcError):
    """A spec that is inconsistent, or a model/input that does not match its spec."""


@dataclass(frozen=True)
class TaskSpec:
    """One task: `name` is the output key (and the data set's label of the same name), `kind`
    detection or segmentation, `classes` the class names (segmentation: one per output
    channel, background first), `decoder` the registered detection decoder (runtime.decoders)."""

    name: str
    kind: str
    classes: tuple[str, ...]
    decoder: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            raise ModelSpecError(
                f"task {self.name!r}: unknown task kind {self.kind!r}; valid kinds: "
                f"{', '.join(TASK_KINDS)}"
            )
        if not self.classes:
            raise ModelSpecError(f"task {self.name!r}: needs at least one class name")
        if self.kind == KIND_DETECTION:
            if self.decoder is None:
                raise ModelSpecError(f"detection task {self.name!r} needs a decoder name")
            check_decoder_name(self.decoder)
        elif self.decoder is not None:
            raise ModelSpecError(f"segmentation task {self.name!r} takes no decoder")
        object.__setattr__(self, "classes", tuple(self.classes))

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass(frozen=True)
class PreprocessSpec:
    """input = ((pixels in `color` order) * scale - mean) / std after resizing to input_hw
    (letterboxed with `pad_value` when `letterbox`); mean/std None = no normalisation. Size,
    normalisation and letterbox have no defaults: each model declares its own."""

    input_hw: tuple[int, int]
    mean: tuple[float, float, float] | None
    std: tuple[float, float, float] | None
    letterbox: bool
    color: str = "RGB"
    pad_value: int = PAD_VALUE

    def __post_init__(self) -> None:
        if self.color not in COLORS:
            raise ModelSpecError(f"preprocess color {self.color!r}; valid: {', '.join(COLORS)}")
        if (self.mean is None) != (self.std is None):
            raise ModelSpecError("preprocess mean and std are both given or both None")

    def to_dict(self, input_hw: Sequence[int] | None = None) -> dict:
        """The checkpoint's `preprocess` block (mean/std 0/1 when the model takes no
        normalisation, so every consumer applies one formula)."""
        hw = list(input_hw or self.input_hw)
        return {
            "input_hw": [int(v) for v in hw],
            "mean": list(self.mean) if self.mean is not None else [0.0, 0.0, 0.0],
            "std": list(self.std) if self.std is not None else [1.0, 1.0, 1.0],
            "letterbox": self.letterbox,
            "color": self.color,
            "pad_value": self.pad_value,
        }


def _no_importer(state_dict: Mapping[str, Any]) -> dict | None:
    return None


@dataclass(frozen=True)
class NoLossOptions:
    """The loss config of a model whose loss takes no options."""


@dataclass(frozen=True)
class ModelSpec:
    """A multi-task model as the pipeline sees it.

    loss: `loss(model, config) -> (outputs, batch) -> dict[task, scalar]`, built from the live
        (maybe pruned) model; `config` is an instance of `loss_config`.
    loss_config: the frozen dataclass of the model's loss options (task weights, gains) with
        their defaults; a training run overrides fields of it by name (`loss_options`).
    taps: default distillation taps (names in `model.feature_info`).
    protected: modules pruning never touches (prediction convs whose channels are a layout).
    removable_blocks: residual blocks depth pruning may remove (`mtc-compress --depth`): module
        paths whose forward is `x + f(x)`, so the removed block is the identity; a `*` matches
        one path segment (e.g. `model.4.m.*`, whatever the depth multiplier made of it). A
        block whose sum is followed by more layers inside it is not removable to identity and
        is not declared. Empty: the model offers no blocks and `--depth` is refused.
    importer: `importer(state_dict) -> (model_config, state_dict) | None`, recognising the
        model's official checkpoint by its keys. decoder_params: `fn(model) -> dict` the
        detection decoder's parameters (anchors, strides, reg_max ...) read from the live model.
    decoded_in_graph: the eval-mode detection output is already decoded rows (cx, cy, w, h,
        obj, classes...); False = raw, decoded by the runtime's numpy decoder."""

    name: str
    tasks: tuple[TaskSpec, ...]
    loss: Callable[..., LossFn]
    preprocess: PreprocessSpec
    loss_config: type = NoLossOptions
    stride: int = 32
    taps: tuple[str, ...] = ()
    protected: tuple[str, ...] = ()
    removable_blocks: tuple[str, ...] = ()
    importer: Callable[[Mapping[str, Any]], tuple[dict, dict] | None] = _no_importer
    decoder_params: Callable[[nn.Module], dict] | None = None
    decoded_in_graph: bool = True
    official_source: str = ""  # shown in checkpoint provenance when the importer matched

    def __post_init__(self) -> None:
        names = [t.name for t in self.tasks]
        if not names or len(set(names)) != len(names):
            raise ModelSpecError(f"model {self.name!r}: task names must be unique, got {names}")
        if sum(t.kind == KIND_DETECTION for t in self.tasks) > 1:
            raise ModelSpecError(f"model {self.name!r}: at most one detection task")
        if self.stride < 1:
            raise ModelSpecError(f"model {self.name!r}: stride must be >= 1, got {self.stride}")
        object.__setattr__(self, "tasks", tuple(self.tasks))
        self.check_input_hw(self.preprocess.input_hw)

    # -- tasks ---------------------------------------------------------------------------
    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tasks)

    @property
    def det(self) -> TaskSpec | None:
        return next((t for t in self.tasks if t.kind == KIND_DETECTION), None)

    @property
    def seg_tasks(self) -> tuple[TaskSpec, ...]:
        return tuple(t for t in self.tasks if t.kind == KIND_SEGMENTATION)

    @property
    def class_names(self) -> tuple[str, ...]:
        """Detection class names (empty without a detection task)."""
        return self.det.classes if self.det else ()

    def task(self, name: str) -> TaskSpec:
        for t in self.tasks:
            if t.name == name:
                return t
        raise ModelSpecError(
            f"model {self.name!r} has no task {name!r}; its tasks: {', '.join(self.task_names)}"
        )

    # -- input size rule -----------------------------------------------------------------
    def nearest_valid_hw(self, hw: Sequence[int]) -> tuple[int, int]:
        return nearest_valid(hw, self.stride)

    def check_input_hw(self, hw: Sequence[int], what: str = "input size") -> tuple[int, int]:
        """(H, W) as ints, or an error suggesting the nearest size the stride rule allows."""
        vals = tuple(int(v) for v in hw)
        if len(vals) != 2 or min(vals) <= 0:
            raise ModelSpecError(
                f"{what} must be two positive integers (height width), got {hw}; nearest valid "
                f"size: {' '.join(str(v) for v in nearest_valid(vals, self.stride))}"
                if len(vals) == 2
                else f"{what} must be two positive integers (height width), got {hw}"
            )
        if max(vals) > MAX_SIDE:
            near = self.nearest_valid_hw(vals)
            raise ModelSpecError(
                f"{what} {vals[0]}x{vals[1]} (HxW) is larger than the maximum of {MAX_SIDE} per "
                f"side ({memory_estimate(vals)}); nearest valid size: {near[0]} {near[1]}"
            )
        if any(v % self.stride for v in vals):
            near = self.nearest_valid_hw(vals)
            raise ModelSpecError(
                f"{what} {vals[0]}x{vals[1]} (HxW) breaks model {self.name!r}'s stride rule "
                f"(multiples of {self.stride}); nearest valid size: {near[0]} {near[1]}"
            )
        return vals  # type: ignore[return-value]

    # -- output contract -----------------------------------------------------------------
    def check_outputs(self, outputs: object, input_hw: Sequence[int], batch: int) -> None:
        """Eval-mode outputs against the spec: one key per task; segmentation
        [B, classes, H, W]; detection [B, N, C] (C >= 5 + classes when decoded in graph)."""
        if not isinstance(outputs, dict):
            raise ModelSpecError(
                f"model {self.name!r}: forward must return a dict keyed by task "
                f"{list(self.task_names)}, got {type(outputs).__name__}"
            )
        if set(outputs) != set(self.task_names):
            raise ModelSpecError(
                f"model {self.name!r}: forward returned tasks {sorted(outputs)}, its spec "
                f"declares {list(self.task_names)}"
            )
        h, w = (int(v) for v in input_hw)
        for t in self.tasks:
            out = outputs[t.name]
            shape = tuple(getattr(out, "shape", ()))
            if t.kind == KIND_SEGMENTATION:
                want: tuple = (batch, t.num_classes, h, w)
                ok = shape == want
                text = f"[{batch}, {t.num_classes}, {h}, {w}]"
            else:
                min_c = 5 + t.num_classes if self.decoded_in_graph else 4 + t.num_classes
                ok = len(shape) == 3 and shape[0] == batch and shape[2] >= min_c
                text = f"[{batch}, N, >={min_c}]"
            if not ok:
                raise ModelSpecError(
                    f"model {self.name!r}: task {t.name!r} ({t.kind}) output has shape "
                    f"{list(shape)}, its spec expects {text} for a {batch}x3x{h}x{w} input"
                )

    def loss_options(self, overrides: Mapping[str, Any] | None = None) -> Any:
        """The model's loss config: its defaults with `overrides` (field -> value). A field the
        model's loss config does not have is an error naming the model and the fields it has."""
        allowed = [f.name for f in fields(self.loss_config)]
        unknown = sorted(set(overrides or {}) - set(allowed))
        if unknown:
            raise LossConfigError(
                f"model {self.name!r} has no loss option {', '.join(unknown)}; its loss options: "
                f"{', '.join(allowed) or 'none'}"
            )
        return self.loss_config(**(overrides or {}))

    def make_loss(self, model: nn.Module, overrides: Mapping[str, Any] | None = None) -> LossFn:
        """The task-loss callable for the live `model`, with the loss options `overrides`."""
        return self.loss(model, self.loss_options(overrides))

    def decoder_info(self, model: nn.Module) -> dict:
        """The detection decoder's parameters for the sidecar (empty without detection)."""
        if self.det is None or self.decoder_params is None:
            return {}
        return dict(self.decoder_params(model))
