"""Checkpoints: one file with everything needed to rebuild, evaluate, export and resume.

Fields: model name + config, (pruned) state dict, pruning record, preprocessing, task/class
names, metrics, provenance, and optionally the training state for exact resume. Official
hustvl/YOLOP checkpoints (a dict with a `state_dict` key) load too. Written atomically.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compressor.models import build_model
from compressor.models.reshape import ShapeMismatchError, resize_to_state_dict
from runtime.errors import MtcError
from runtime.spec import DEFAULT_INPUT_HW, DET_CLASSES, IMAGENET_MEAN, IMAGENET_STD, TASKS

FORMAT = "mtc-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(MtcError):
    """A file that is not a usable checkpoint, or one that does not fit the model asked for."""


def default_preprocess(input_hw: tuple[int, int] = DEFAULT_INPUT_HW) -> dict:
    return {
        "input_hw": list(input_hw),
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "letterbox": True,
        "color": "RGB",
        "pad_value": 114,
    }


@dataclass
class Checkpoint:
    model_name: str
    model_config: dict
    state_dict: dict
    pruning: dict | None = None
    preprocess: dict = field(default_factory=default_preprocess)
    tasks: list = field(default_factory=lambda: list(TASKS))
    class_names: list = field(default_factory=lambda: list(DET_CLASSES))
    metrics: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    train_state: dict | None = None
    path: str | None = None
    sha256: str | None = None

    def to_payload(self) -> dict:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model": {"name": self.model_name, "config": self.model_config},
            "state_dict": self.state_dict,
            "pruning": self.pruning,
            "preprocess": self.preprocess,
            "tasks": self.tasks,
            "class_names": self.class_names,
            "metrics": self.metrics,
            "provenance": self.provenance,
            "train_state": self.train_state,
        }


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save to a temp file in the same folder, fsync, rename: a crash never leaves a
    half-written checkpoint under the final name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path: str | os.PathLike, model: nn.Module, **fields: Any) -> Checkpoint:
    """Save `model` (built-in or pruned) with the given Checkpoint fields."""
    name = fields.pop("model_name", getattr(model, "model_name", None))
    config = fields.pop("model_config", getattr(model, "config", None))
    if name is None or config is None:
        raise CheckpointError(
            f"{type(model).__name__} has no model_name/config: build it with "
            "compressor.build_model, or pass model_name= and model_config= explicitly"
        )
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    prov = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "torch": str(torch.__version__)}
    prov.update(fields.pop("provenance", {}) or {})
    ckpt = Checkpoint(name, dict(config), state, provenance=prov, **fields)
    atomic_torch_save(ckpt.to_payload(), path)
    ckpt.path = str(path)
    return ckpt


def _read(path: Path, map_location: str | torch.device) -> Any:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (expected a .pt file)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for corrupt/foreign files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({first[:200]}); expected a file written by "
            "mtc (save_checkpoint / mtc-train) or an official YOLOP End-to-end.pth"
        ) from None


def _parse(payload: Any, path: Path) -> Checkpoint:
    if isinstance(payload, dict) and payload.get("format") == FORMAT:
        if payload.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(
                f"{path}: checkpoint format version {payload.get('format_version')} is not "
                f"supported (this mtc reads version {FORMAT_VERSION})"
            )
        model = payload["model"]
        keep = (
            "pruning",
            "preprocess",
            "tasks",
            "class_names",
            "metrics",
            "provenance",
            "train_state",
        )
        return Checkpoint(
            model["name"],
            model["config"],
            payload["state_dict"],
            **{k: payload[k] for k in keep if payload.get(k) is not None},
        )
    sd = payload.get("state_dict") if isinstance(payload, dict) else None
    if isinstance(sd, dict) and "model.24.anchors" in sd:  # official hustvl/YOLOP
        return Checkpoint(
            "yolop",
            {"width": 1.0, "depth": 1.0, "num_classes": 1},
            sd,
            provenance={"source": "hustvl/YOLOP official checkpoint"},
        )
    keys = sorted(payload)[:6] if isinstance(payload, dict) else type(payload).__name__
    raise CheckpointError(
        f"{path} is not an mtc or YOLOP checkpoint (top-level keys: {keys}); expected "
        f"format={FORMAT!r} or an official YOLOP file with a 'state_dict'"
    )


def load_checkpoint(
    path: str | os.PathLike, model: nn.Module | None = None, map_location: str = "cpu"
) -> tuple[nn.Module, Checkpoint]:
    """Load a checkpoint and rebuild its model. Pruned models are rebuilt from the stored
    shapes (no re-pruning). Pass `model` to load into an architecture that is not registered."""
    path = Path(path)
    ckpt = _parse(_read(path, map_location), path)
    ckpt.path, ckpt.sha256 = str(path), file_sha256(path)
    if model is None:
        model = build_model(ckpt.model_name, **ckpt.model_config)
    try:
        resize_to_state_dict(model, ckpt.state_dict)
    except ShapeMismatchError as e:
        raise CheckpointError(
            f"{path} does not fit model {ckpt.model_name!r} {ckpt.model_config}: {e}"
        ) from None
    return model, ckpt
