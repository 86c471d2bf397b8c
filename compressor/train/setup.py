"""Building what a run needs from its config: data sets and loaders, the model (new, from an
init checkpoint, or from the checkpoint being resumed) and the checkpoint fields it carries."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from compressor.checkpoint import Checkpoint, CheckpointError, default_preprocess, load_checkpoint
from compressor.data import BddDataset, DataConfig, make_loader
from compressor.data.layouts import count_image_files
from compressor.models import build_model
from compressor.models.registry import builder_params, spec_of
from compressor.models.spec import ModelSpecError
from compressor.train.config import (
    RESUME_OVERRIDABLE,
    TrainConfig,
    TrainConfigError,
    loss_config_for,
)
from compressor.train.ddp import DistContext
from compressor.train.sampler import EpochSampler
from compressor.train.state import read_train_state
from runtime.errors import MtcError


@dataclass
class ModelSource:
    """The model to train and the checkpoint fields (pruning record etc.) it must be saved with."""

    model: nn.Module
    fields: dict = field(default_factory=dict)
    resume_state: dict | None = None


def resume_config(path: str | Path, **overrides: object) -> TrainConfig:
    """The config a checkpoint was trained with, with `overrides` (only RESUME_OVERRIDABLE)."""
    _, ckpt = load_checkpoint(path)
    saved = TrainConfig.from_dict(read_train_state(ckpt, str(path))["config"])
    # The run lives where its last.pt is (the folder may have been moved since it started).
    overrides.setdefault("out", str(Path(path).parent))
    return saved.for_resume(resume=str(path), **overrides)


def _check_resume_config(cfg: TrainConfig, saved: dict, path: str, model: nn.Module) -> None:
    now = cfg.to_dict()
    diff = [
        k
        for k in now
        if k not in RESUME_OVERRIDABLE and k in saved and not _same(k, saved[k], now[k], model)
    ]
    if diff:
        shown = ", ".join(f"{k}: {saved[k]!r} -> {now[k]!r}" for k in diff[:4])
        raise TrainConfigError(
            f"resuming {path} with different settings ({shown}); a resumed run keeps the settings "
            f"it started with — drop those flags (only {', '.join(RESUME_OVERRIDABLE)} may change)"
        )


def _same(key: str, saved: Any, now: Any, model: nn.Module) -> bool:
    """Loss options are the same when they give the same loss config (an older checkpoint
    stores the full block, a new run only what it overrides)."""
    if saved == now or key != "loss":
        return saved == now
    try:
        spec = spec_of(model)
        return loss_config_for(spec, saved) == loss_config_for(spec, now)
    except MtcError:
        return False


def run_loss_config(cfg: TrainConfig, model: nn.Module, loss_fn: Callable | None) -> Any:
    """The model's loss config with cfg.loss applied (None with a given loss_fn, which the
    options cannot reach)."""
    if loss_fn is None:
        return loss_config_for(spec_of(model), cfg.loss)
    if cfg.loss:
        raise TrainConfigError(
            f"loss options {', '.join(sorted(cfg.loss))} set the model spec's loss, but a "
            "loss_fn was given: configure that loss itself, or drop loss_fn"
        )
    return None


def _check_init_architecture(cfg: TrainConfig, ckpt: Checkpoint, path: str) -> None:
    """With --init the checkpoint defines the model; a model flag that was set (differs from
    its default) and disagrees with the checkpoint is a mistake, not something to ignore."""
    defaults = TrainConfig.__dataclass_fields__
    have = {"model": ckpt.model_name, **ckpt.model_config}
    wanted = {k: getattr(cfg, k) for k in ("model", "width", "depth", "num_classes")}
    bad = [k for k, v in wanted.items() if v != defaults[k].default and k in have and have[k] != v]
    if bad:
        shown = ", ".join(f"{k}={wanted[k]!r} (checkpoint: {have[k]!r})" for k in bad)
        raise CheckpointError(
            f"--init {path} is a different model than asked for: {shown}; drop those flags to "
            "train the checkpoint's architecture, or pass matching values"
        )


def _carried_fields(ckpt: Checkpoint) -> dict:
    return {"pruning": ckpt.pruning, "tasks": ckpt.tasks, "class_names": ckpt.class_names}


_ARCH_FLAGS = ("width", "depth", "num_classes")


def builder_kwargs(cfg: TrainConfig) -> dict:
    """The architecture flags the model's builder takes; a flag set away from its default for a
    builder that does not take it is a mistake, not something to ignore."""
    params = builder_params(cfg.model)
    defaults = TrainConfig.__dataclass_fields__
    out, refused = {}, []
    for k in _ARCH_FLAGS:
        if params is None or k in params:
            out[k] = getattr(cfg, k)
        elif getattr(cfg, k) != defaults[k].default:
            refused.append(f"{k}={getattr(cfg, k)!r}")
    if refused:
        raise TrainConfigError(
            f"model {cfg.model!r} takes no {', '.join(refused)}; its builder takes "
            f"{', '.join(params or ()) or 'no arguments'}"
        )
    return out


def load_model(cfg: TrainConfig, model: nn.Module | None, extra: dict | None) -> ModelSource:
    """Resume > init checkpoint > given model > a new built-in model."""
    src = ModelSource(model) if model is not None else None
    path = cfg.resume or cfg.init
    if path:
        loaded, ckpt = load_checkpoint(path, model=model)
        if model is None and not cfg.resume:
            _check_init_architecture(cfg, ckpt, path)
        src = ModelSource(loaded, _carried_fields(ckpt))
        if cfg.resume:
            state = read_train_state(ckpt, cfg.resume)
            _check_resume_config(cfg, state.get("config", {}), cfg.resume, loaded)
            src.resume_state = state
            src.fields["provenance"] = ckpt.provenance
    if src is None:
        src = ModelSource(build_model(cfg.model, **builder_kwargs(cfg)))
    try:
        spec = spec_of(src.model)
    except ModelSpecError:  # a model without a spec: the ImageNet letterbox default
        src.fields["preprocess"] = default_preprocess(cfg.imgsz)
    else:
        try:
            hw = spec.check_input_hw(cfg.imgsz, "imgsz")
        except ModelSpecError as e:
            raise TrainConfigError(str(e)) from None
        src.fields["preprocess"] = spec.preprocess.to_dict(hw)
        src.fields.setdefault("tasks", list(spec.task_names))
        src.fields.setdefault("class_names", list(spec.class_names))
    src.fields.update(extra or {})
    if not (hasattr(src.model, "model_name") or "model_name" in src.fields):
        raise CheckpointError(
            f"{type(src.model).__name__} has no model_name/config; pass model_name= and "
            "model_config= in init_checkpoint_fields so its checkpoints can be rebuilt"
        )
    return src


def check_out_dir(cfg: TrainConfig) -> None:
    """Refuse to start a new run over another run's checkpoints (resume it or pick a folder),
    and a resume anywhere but in the folder of the run it continues: writing last.pt and the
    report into another folder would mix two runs (or overwrite another run's files)."""
    last = Path(cfg.out) / "last.pt"
    if cfg.resume:
        home = Path(cfg.resume).resolve().parent
        if Path(cfg.out).resolve() != home:
            raise TrainConfigError(
                f"--resume {cfg.resume} continues the run in {home}, but -o is {cfg.out}; a "
                f"resumed run writes only into its own folder: drop -o (or pass -o {home}), or "
                f"start a new run from these weights with --init {cfg.resume} -o {cfg.out}"
            )
        return
    if last.is_file() and not cfg.overwrite:
        raise TrainConfigError(
            f"{cfg.out} already holds a training run ({last}); continue it with --resume {last}, "
            "choose another -o, or pass --overwrite to start over"
        )


def check_batch_before_loading(cfg: TrainConfig, ctx: DistContext) -> None:
    """The batch against the training split's image files (an upper bound on its samples),
    before the model or any label is loaded; build_data checks the exact count again."""
    n = count_image_files(Path(cfg.data), "train", cfg.max_train_images)
    per_rank = -(-n // ctx.world)
    if cfg.batch > per_rank:
        where = f" per process ({ctx.world} processes)" if ctx.distributed else ""
        raise TrainConfigError(
            f"batch {cfg.batch} is larger than the {per_rank} training images{where} in "
            f"{cfg.data} (counted from its image files, before loading); use --batch "
            f"{max(1, per_rank)} or less, or add images"
        )


@dataclass
class Data:
    train: BddDataset
    sampler: EpochSampler
    loader: DataLoader
    val_loader: DataLoader | None


def build_data(cfg: TrainConfig, ctx: DistContext, preprocess: dict | None = None) -> Data:
    """Training loader on every rank (sharded); validation loader on rank 0 only. Images are
    normalised as the model's `preprocess` (its checkpoint block) says."""
    pre = {k: v for k, v in (preprocess or {}).items() if k != "input_hw"}
    train_cfg = DataConfig.for_preprocess(
        pre,
        input_hw=cfg.imgsz,
        augment=cfg.augment,
        lane_labels=cfg.train_lane_labels,
        max_images=cfg.max_train_images,
        skip_bad_images=cfg.skip_bad_images,
        strict_labels=cfg.strict_labels,
        mask_map=cfg.mask_map,
        seed=cfg.seed,
    )
    train = BddDataset(cfg.data, "train", train_cfg)
    sampler = EpochSampler(len(train), shuffle=True, seed=cfg.seed, rank=ctx.rank, world=ctx.world)
    if cfg.batch > sampler.per_rank():
        where = f" per process ({ctx.world} processes)" if ctx.distributed else ""
        raise TrainConfigError(
            f"batch {cfg.batch} is larger than the {sampler.per_rank()} training images"
            f"{where} in {cfg.data}; use --batch {sampler.per_rank()} or less, or add images"
        )
    loader = make_loader(
        train, cfg.batch, shuffle=False, workers=cfg.workers, sampler=sampler, seed=cfg.seed
    )
    # Every rank opens the val split so a missing one fails everywhere (not a hang on rank 1).
    val_cfg = DataConfig.for_preprocess(
        pre,
        input_hw=cfg.imgsz,
        augment=False,
        lane_labels=cfg.val_lane_labels,
        max_images=cfg.max_val_images,
        skip_bad_images=cfg.skip_bad_images,
        strict_labels=cfg.strict_labels,
        mask_map=cfg.mask_map,
    )
    val = BddDataset(cfg.data, "val", val_cfg)
    val_loader = (
        make_loader(val, cfg.batch, shuffle=False, workers=cfg.workers) if ctx.is_main else None
    )
    return Data(train, sampler, loader, val_loader)


def cpu_has_fast_bf16() -> bool:
    """True where the CPU computes bfloat16 natively (AVX512-BF16 or AMX), so `cpu_bf16`
    training is faster rather than emulated."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)
