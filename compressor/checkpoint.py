"""Checkpoints: one file with everything needed to rebuild, evaluate, export and resume.

Fields: model name + config, (pruned) state dict, pruning record, preprocessing, task/class
names, metrics, provenance, and optionally the training state for exact resume. A registered
model's official checkpoint loads too: its spec's importer recognises the file by its keys.
Written atomically.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compressor.models import build_model
from compressor.models.registry import closest_model, get_spec, import_official, spec_of
from compressor.models.reshape import ShapeMismatchError, remove_blocks, resize_to_state_dict
from compressor.models.spec import ModelSpec
from runtime.errors import MtcError
from runtime.fileio import normal_permissions, remove_stale_temps
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
    remove_stale_temps(path, ".tmp")  # a save cut off by SIGKILL left its temp file
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        normal_permissions(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def spec_fields(spec: ModelSpec, input_hw: tuple[int, int] | None = None) -> dict:
    """The checkpoint fields a model's spec determines: preprocessing, tasks, class names."""
    return {
        "preprocess": spec.preprocess.to_dict(input_hw),
        "tasks": list(spec.task_names),
        "class_names": list(spec.class_names),
    }


def save_checkpoint(
    path: str | os.PathLike, model: nn.Module, spec: ModelSpec | None = None, **fields: Any
) -> Checkpoint:
    """Save `model` (built-in or pruned) with the given Checkpoint fields; preprocessing, tasks
    and class names not given come from the model's spec (`spec=` for a model that is not
    registered). An unregistered model is loaded back with `load_checkpoint(path, model=...)`."""
    try:
        ms: ModelSpec | None = spec_of(model, spec)
    except MtcError:
        ms = None
    name = fields.pop("model_name", getattr(model, "model_name", None) or (ms and ms.name))
    config = fields.pop("model_config", getattr(model, "config", None))
    if config is None and ms is not None:
        config = {}
    if name is None or config is None:
        raise CheckpointError(
            f"{type(model).__name__} has no model_name/config: build it with "
            "compressor.build_model, pass spec= (its ModelSpec), or pass model_name= and "
            "model_config= explicitly"
        )
    if ms is not None:
        for key, value in spec_fields(ms).items():
            fields.setdefault(key, value)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    prov = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "torch": str(torch.__version__)}
    prov.update(fields.pop("provenance", {}) or {})
    ckpt = Checkpoint(name, dict(config), state, provenance=prov, **fields)
    atomic_torch_save(ckpt.to_payload(), path)
    ckpt.path = str(path)
    return ckpt


_EXPECTED = (
    "expected a checkpoint written by mtc (mtc-train / mtc-compress) or the official checkpoint "
    "of a registered model"
)


def _what_file(path: Path, head: bytes) -> str | None:
    """What a file that torch cannot load looks like, from its first bytes (None: unknown)."""
    if not head:
        return "an empty file"
    if path.suffix.lower() == ".onnx" or (head[:1] == b"\x08" and b"\x12" in head[2:4]):
        return "an ONNX model (pass it to mtc-run, or export from the .pt it came from)"
    if path.suffix.lower() in (".engine", ".plan", ".trt"):
        return "a TensorRT engine"
    if head.startswith((b"\xff\xd8", b"\x89PNG")):
        return "an image"
    if head.lstrip()[:1] in (b"{", b"["):
        return "a JSON/text file"
    if head.startswith(b"PK\x03\x04"):
        if zipfile.is_zipfile(path):
            return (
                "a PyTorch file holding Python objects other than tensors and plain data "
                "(not written by mtc)"
            )
        return (
            "a truncated or damaged PyTorch checkpoint (its zip archive is incomplete: "
            "was the save or the copy cut off?)"
        )
    if head[:1] == b"\x80":
        return "a Python pickle that is not a checkpoint mtc can load safely"
    return None


def _torch_reason(e: Exception) -> str:
    """torch's own reason, one complete sentence; its advice to load with weights_only=False
    is dropped (unsafe for a file of unknown origin, and not what this file needs)."""
    text = " ".join(str(e).split()) or type(e).__name__
    if "weights_only" in text or "Weights only load failed" in text:
        return "unrecognised content"
    first = text.split(". ")[0].rstrip(".")
    return first if len(first) <= 160 else type(e).__name__


def _read(path: Path, map_location: str | torch.device) -> Any:
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise CheckpointError(f"checkpoint {path} {what}; {_EXPECTED}")
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickles before failing
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for corrupt/foreign files
        with open(path, "rb") as f:
            head = f.read(16)
        what = _what_file(path, head)
        if what is None:
            what = f"not a PyTorch checkpoint ({_torch_reason(e)})"
        raise CheckpointError(f"{path} is {what}; {_EXPECTED}") from None


def _parse(payload: Any, path: Path, model: nn.Module | None = None) -> Checkpoint:
    try:
        return _parse_payload(payload, path, model)
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise CheckpointError(
            f"{path} is a damaged mtc checkpoint (field {e} missing or of the wrong type); "
            f"{_EXPECTED}"
        ) from None


def _parse_payload(payload: Any, path: Path, model: nn.Module | None) -> Checkpoint:
    if isinstance(payload, dict) and payload.get("format") == FORMAT:
        if payload.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(
                f"{path}: checkpoint format version {payload.get('format_version')} is not "
                f"supported (this mtc reads version {FORMAT_VERSION})"
            )
        model = payload["model"]
        if not (
            isinstance(model["name"], str)
            and isinstance(model["config"], dict)
            and isinstance(payload["state_dict"], dict)
        ):
            raise TypeError("model.name / model.config / state_dict")
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
    sd = _official_state_dict(payload)
    if sd is not None:
        got = import_official(sd)
        if got is not None:
            name, config, state = got
            spec = get_spec(name)
            return Checkpoint(
                name,
                config,
                state,
                provenance={"source": spec.official_source or f"official {name} checkpoint"},
                **spec_fields(spec),
            )
        if model is not None:  # a foreign file for an architecture the caller built
            clean = {k.removeprefix("module."): v for k, v in sd.items()}
            name = str(getattr(model, "model_name", type(model).__name__))
            extra = spec_fields(model.model_spec) if hasattr(model, "model_spec") else {}
            return Checkpoint(name, dict(getattr(model, "config", {}) or {}), clean, **extra)
        close = closest_model(list(sd))
        hint = f" (closest registered model: {close!r})" if close else ""
        raise CheckpointError(
            f"{path} holds a state dict of {len(sd)} tensors that no registered model's importer "
            f"recognises{hint}; register the model with its spec (compressor.register_model), "
            "or load it with load_checkpoint(path, model=...)"
        )
    keys = sorted(map(str, payload))[:6] if isinstance(payload, dict) else type(payload).__name__
    raise CheckpointError(
        f"{path} is not an mtc checkpoint or a state dict (top-level keys: {keys}); expected "
        f"format={FORMAT!r}, a registered model's official file, or a plain state dict"
    )


def _official_state_dict(payload: Any) -> dict | None:
    """The tensors of a foreign checkpoint: `{'state_dict': {...}}`, `{'model': {...}}` or a
    bare state dict (keys -> tensors, possibly with DataParallel's `module.` prefix)."""
    if not isinstance(payload, dict):
        return None
    for key in ("state_dict", "model"):
        inner = payload.get(key)
        if isinstance(inner, dict) and inner and all(torch.is_tensor(v) for v in inner.values()):
            return inner
    if payload and all(isinstance(k, str) and torch.is_tensor(v) for k, v in payload.items()):
        return payload
    return None


def load_checkpoint(
    path: str | os.PathLike, model: nn.Module | None = None, map_location: str = "cpu"
) -> tuple[nn.Module, Checkpoint]:
    """Load a checkpoint and rebuild its model. Pruned models are rebuilt from the stored
    shapes (no re-pruning). Pass `model` to load into an architecture that is not registered."""
    path = Path(path)
    ckpt = _parse(_read(path, map_location), path, model)
    ckpt.path, ckpt.sha256 = str(path), file_sha256(path)
    if model is None:
        try:
            model = build_model(ckpt.model_name, **ckpt.model_config)
        except (MtcError, TypeError, ValueError) as e:
            raise CheckpointError(
                f"{path}: cannot rebuild its model {ckpt.model_name!r} from the stored config "
                f"({' '.join(str(e).split())}); the file is damaged or from another mtc"
            ) from None
    try:
        remove_blocks(model, (ckpt.pruning or {}).get("removed_blocks") or ())
        resize_to_state_dict(model, ckpt.state_dict)
    except ShapeMismatchError as e:
        raise CheckpointError(
            f"{path} does not fit model {ckpt.model_name!r} {ckpt.model_config}: {e}"
        ) from None
    return model, ckpt
