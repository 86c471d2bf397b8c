"""Training state for exact resume: what goes into `train_state` and how it comes back.

Checkpoints are read with `torch.load(weights_only=True)`, so everything here is tensors, dicts,
lists, strings and numbers: numpy's and Python's RNG states are converted to lists.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from compressor.checkpoint import CheckpointError
from compressor.train.config import TrainConfig


def rng_state() -> dict:
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [
            np_state[0],
            [int(v) for v in np_state[1]],
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    if torch.cuda.is_available():
        state["cuda"] = [s for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"].cpu())
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if (
        "cuda" in state
        and torch.cuda.is_available()
        and len(state["cuda"]) == torch.cuda.device_count()
    ):
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@dataclass
class Progress:
    """Where the run is. `epoch` is the epoch in progress (or the next one when `epoch_step`
    is 0); `epoch_step` counts batches of `epoch` already trained."""

    epoch: int = 0
    epoch_step: int = 0
    step: int = 0
    best_score: float | None = None
    history: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "epoch_step": self.epoch_step,
            "step": self.step,
            "best_score": self.best_score,
            "history": self.history,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Progress:
        return cls(
            int(d["epoch"]),
            int(d["epoch_step"]),
            int(d["step"]),
            d.get("best_score"),
            list(d.get("history", [])),
        )


@dataclass
class Stateful:
    """The objects whose state a checkpoint carries besides the model weights."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None
    ema: object | None  # compressor.train.optim.ModelEMA
    extension: nn.Module | None


def build_train_state(parts: Stateful, progress: Progress, cfg: TrainConfig, world: int) -> dict:
    """Everything needed to continue; the model's raw weights only when the checkpoint's own
    state dict holds the EMA weights (the ones that are evaluated and shipped)."""
    return {
        "progress": progress.to_dict(),
        "optimizer": parts.optimizer.state_dict(),
        "scheduler": parts.scheduler.state_dict(),
        "scaler": parts.scaler.state_dict() if parts.scaler is not None else None,
        "ema": parts.ema.state_dict() if parts.ema is not None else None,
        "raw_model": (
            {k: v.detach().cpu().clone() for k, v in parts.model.state_dict().items()}
            if parts.ema is not None
            else None
        ),
        "extension": parts.extension.state_dict() if parts.extension is not None else None,
        "rng": rng_state(),
        "config": cfg.to_dict(),
        "world": int(world),
    }


def restore_train_state(parts: Stateful, state: dict, path: str) -> Progress:
    """Load optimizer/scheduler/EMA/extension/RNG state saved by `build_train_state`."""
    try:
        if state.get("raw_model") is not None:
            parts.model.load_state_dict(state["raw_model"])
        parts.optimizer.load_state_dict(state["optimizer"])
        parts.scheduler.load_state_dict(state["scheduler"])
        if parts.scaler is not None and state.get("scaler"):
            parts.scaler.load_state_dict(state["scaler"])
        if parts.ema is not None:
            if state.get("ema") is None:
                raise CheckpointError(f"{path} was trained without EMA; resume it with ema off")
            parts.ema.load_state_dict(state["ema"])
        _restore_extension(parts.extension, state.get("extension"), path)
    except (KeyError, ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path}: training state does not fit this run ({first}); resume with the model, "
            "extension and optimizer settings the run started with"
        ) from None
    set_rng_state(state["rng"])
    return Progress.from_dict(state["progress"])


def _restore_extension(extension: nn.Module | None, saved: dict | None, path: str) -> None:
    if extension is None and saved:
        raise CheckpointError(
            f"{path} holds the state of a training extension (e.g. distillation adapters) but "
            "none was given; resume through the same entry point (mtc-compress) that started it"
        )
    if extension is not None and saved is not None:
        extension.load_state_dict(saved)


def read_train_state(ckpt: object, path: str) -> dict:
    state = getattr(ckpt, "train_state", None)
    if not state or "progress" not in state:
        raise CheckpointError(
            f"{path} has no training state (a final or exported checkpoint?); resume from the "
            "last.pt written by mtc-train, or pass it as --init to start a new run from its weights"
        )
    return state
