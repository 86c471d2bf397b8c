"""What is exported: a checkpoint (ours, or a registered model's official file) or a model in
memory, with what the sidecar needs to know about it (name, config, preprocessing, classes,
spec, checkpoint hash)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from compressor.checkpoint import load_checkpoint
from compressor.models.registry import spec_of
from compressor.models.spec import ModelSpec


@dataclass
class LoadedModel:
    """A model ready to export plus what the sidecar needs to know about it."""

    model: nn.Module
    model_name: str
    model_config: dict
    preprocess: dict
    class_names: list
    spec: ModelSpec
    checkpoint_sha256: str | None = None
    checkpoint_path: str | None = None


class ModelFromCheckpoint:
    """Lazy: calling loads the checkpoint (ours or official YOLOP) and rebuilds the model once."""

    def __init__(
        self, path: str | Path, model: nn.Module | None = None, spec: ModelSpec | None = None
    ):
        self.path = Path(path)
        self.model, self.spec = model, spec  # an architecture that is not registered, its spec
        self._loaded: LoadedModel | None = None

    def __call__(self) -> LoadedModel:
        if self._loaded is None:
            model, ckpt = load_checkpoint(self.path, model=self.model)
            self._loaded = LoadedModel(
                model.eval(),
                ckpt.model_name,
                dict(ckpt.model_config),
                dict(ckpt.preprocess),
                list(ckpt.class_names),
                spec_of(model, self.spec),
                ckpt.sha256,
                str(self.path),
            )
        return self._loaded


def loaded_from_module(
    model: nn.Module, imgsz: tuple[int, int] | None, spec: ModelSpec | None
) -> LoadedModel:
    """A model passed in memory: its spec gives what a checkpoint would have stored."""
    ms = spec_of(model, spec)
    return LoadedModel(
        model.eval(),
        str(getattr(model, "model_name", ms.name)),
        dict(getattr(model, "config", {}) or {}),
        ms.preprocess.to_dict(imgsz),
        list(ms.class_names),
        ms,
    )
