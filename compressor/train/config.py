"""Training configuration: one frozen dataclass, every CLI flag a field, validated once.

Resuming restores this object from the checkpoint, so a resumed run keeps the settings it started
with (only the fields in `RESUME_OVERRIDABLE` may change on resume).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from compressor.data.labels import checked_mask_map
from compressor.models.spec import ModelSpec
from runtime.errors import MtcError
from runtime.spec import DEFAULT_INPUT_HW

OPTIMIZERS = ("sgd", "adamw")
LR_SCHEDULES = ("cosine", "linear", "constant")
DET_MODES = ("yolop", "coco", "both")
SEG_MODES = ("global", "per_batch")
LANE_LABELS = ("wide", "thin")
# Keys of the validation summary a best checkpoint can be chosen by (all: higher is better).
# "mean" = mean of det mAP50, drivable mIoU and lane IoU over the tasks the model has.
BEST_METRICS = (
    "mean",
    "det_map50",
    "det_map50_95",
    "det_recall",
    "det_precision",
    "drivable_miou",
    "drivable_acc",
    "lane_iou",
    "lane_recall",
    "lane_balanced_acc",
)

# Fields a resumed run may change: where and how it runs, and how long it goes on.
RESUME_OVERRIDABLE = (
    "epochs",
    "stop_after_epochs",
    "device",
    "workers",
    "progress",
    "resume",
    "save_every",
    "eval_every",
    "data",
    "out",
    "skip_bad_images",
    "strict_labels",
)


class TrainConfigError(MtcError):
    """A training option outside its valid range or inconsistent with another."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on. Defaults are tuned so the small teacher
    (width 0.25, depth 0.33) learns all three tasks on the synthetic set in CPU minutes."""

    data: str = ""
    out: str = "runs/train"
    imgsz: tuple[int, int] = DEFAULT_INPUT_HW
    epochs: int = 30
    batch: int = 8
    # model: built-in name + multipliers, or an init checkpoint (weights and architecture)
    model: str = "yolop"
    width: float = 1.0
    depth: float = 1.0
    num_classes: int = 1
    init: str | None = None
    # optimisation
    optimizer: str = "adamw"
    lr: float = 1e-2
    momentum: float = 0.937
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    lr_schedule: str = "cosine"
    lr_final: float = 0.05
    ema: bool = True
    ema_decay: float = 0.9999
    ema_tau: float = 2000.0
    amp: bool = True  # float16 autocast + grad scaling on CUDA
    # bfloat16 autocast when training on CPU: ~1.4x faster steps on CPUs with AVX512-BF16 or
    # AMX (measured on the demo's model), emulated and slower elsewhere; losses stay float32
    cpu_bf16: bool = False
    grad_clip: float = 10.0
    # loss options of the trained model's spec (its loss_config fields) -> value; the rest keep
    # the model's defaults. Checked against the model once it is known (`loss_config_for`).
    loss: Mapping[str, Any] = field(default_factory=dict)
    # data
    augment: bool = True
    train_lane_labels: str = "wide"
    max_train_images: int | None = None
    max_val_images: int | None = None
    workers: int = 2
    skip_bad_images: bool = False  # drop samples with truncated files (else a named error)
    strict_labels: bool = False  # label problems are errors (compressor.data.labels)
    mask_map: tuple[str, ...] = ()  # e.g. ("drivable:7=1",): DataConfig.mask_map
    # evaluation and checkpoints
    eval_every: int = 1
    det_mode: str = "yolop"
    seg_mode: str = "global"
    val_lane_labels: str = "thin"
    best_metric: str = "mean"
    save_every: int = 0
    resume: str | None = None
    overwrite: bool = False
    stop_after_epochs: int | None = None
    # runtime
    seed: int = 0
    device: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        hw = tuple(int(v) for v in self.imgsz)
        object.__setattr__(self, "imgsz", hw)
        object.__setattr__(self, "mask_map", checked_mask_map(self.mask_map, TrainConfigError))
        if not isinstance(self.loss, Mapping):
            raise TrainConfigError(
                f"loss must map loss option names to values, e.g. {{'lane_weight': 2.0}}; got "
                f"{type(self.loss).__name__}"
            )
        loss = {
            str(k): tuple(v) if isinstance(v, list | tuple) else v for k, v in self.loss.items()
        }
        object.__setattr__(self, "loss", loss)
        problems = [p for p in _problems(self) if p]
        if problems:
            raise TrainConfigError("bad training config: " + "; ".join(problems))

    def to_dict(self) -> dict:
        """Plain dict (lists, numbers, str, None): what goes into checkpoints and reports."""
        d = asdict(self)
        d["imgsz"] = list(self.imgsz)
        d["mask_map"] = list(self.mask_map)
        d["loss"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.loss.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def for_resume(self, **overrides: object) -> TrainConfig:
        bad = sorted(set(overrides) - set(RESUME_OVERRIDABLE))
        if bad:
            raise TrainConfigError(
                f"cannot change {', '.join(bad)} when resuming (the run continues with the "
                f"settings it started with); changeable: {', '.join(RESUME_OVERRIDABLE)}"
            )
        return replace(self, **overrides)


# Checkpoints written before each model owned its loss config hold, as `loss`, every field of
# YOLOP's loss config whatever the model; a model whose config lacks them ignored them then.
_LEGACY_LOSS_KEYS = frozenset(
    (
        "det_weight",
        "drivable_weight",
        "lane_weight",
        "box_gain",
        "obj_gain",
        "cls_gain",
        "level_balance",
        "anchor_threshold",
        "drivable_gain",
        "lane_bce_gain",
        "lane_tversky_gain",
        "lane_pos_weight",
        "tversky_alpha",
        "tversky_beta",
    )
)


def loss_config_for(spec: ModelSpec, loss: Mapping[str, Any]) -> Any:
    """The trained model's loss config: `spec`'s defaults with the run's overrides `loss`
    (an older checkpoint's full YOLOP-form block, for a model without those options, was
    ignored when it was written, and still is)."""
    allowed = {f.name for f in fields(spec.loss_config)}
    if set(loss) == _LEGACY_LOSS_KEYS and not set(loss) <= allowed:
        loss = {}
    return spec.loss_options(loss)


def _choice(name: str, value: str, options: tuple[str, ...]) -> str | None:
    if value not in options:
        return f"{name} must be one of {', '.join(options)} (got {value!r})"
    return None


def _positive(cfg: TrainConfig, names: tuple[str, ...], allow_zero: bool = False) -> list[str]:
    out = []
    for n in names:
        v = getattr(cfg, n)
        if v is None:
            continue
        if v < 0 or (v == 0 and not allow_zero):
            out.append(f"{n} must be {'>= 0' if allow_zero else '> 0'} (got {v})")
    return out


def _problems(cfg: TrainConfig) -> list[str | None]:
    out: list[str | None] = [
        _choice("optimizer", cfg.optimizer, OPTIMIZERS),
        _choice("lr_schedule", cfg.lr_schedule, LR_SCHEDULES),
        _choice("det_mode", cfg.det_mode, DET_MODES),
        _choice("seg_mode", cfg.seg_mode, SEG_MODES),
        _choice("train_lane_labels", cfg.train_lane_labels, LANE_LABELS),
        _choice("val_lane_labels", cfg.val_lane_labels, LANE_LABELS),
        _choice("best_metric", cfg.best_metric, BEST_METRICS),
    ]
    if len(cfg.imgsz) != 2 or min(cfg.imgsz) <= 0:
        out.append(f"imgsz must be two positive integers (height width), got {cfg.imgsz}")
    out += _positive(
        cfg,
        (
            "epochs",
            "batch",
            "lr",
            "width",
            "depth",
            "num_classes",
            "max_train_images",
            "max_val_images",
            "stop_after_epochs",
        ),
    )
    out += _positive(
        cfg,
        (
            "momentum",
            "weight_decay",
            "warmup_epochs",
            "grad_clip",
            "workers",
            "eval_every",
            "save_every",
            "ema_tau",
            "lr_final",
        ),
        allow_zero=True,
    )
    if not 0.0 <= cfg.ema_decay < 1.0:
        out.append(f"ema_decay must be in [0, 1) (got {cfg.ema_decay})")
    if not cfg.data:
        out.append("data is empty: give the data set root (e.g. --data data/synth)")
    return out
