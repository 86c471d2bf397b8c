"""The model registry: one entry per model name, holding its builder and its spec (what the
pipeline reads about it). Strict: a second claim on a name raises, an unknown name lists the
registered ones with a close match."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from compressor.models.spec import ModelSpec, ModelSpecError
from runtime.errors import MtcError
from runtime.registry import Registry


class UnknownModelError(MtcError):
    """Asked for a model name nobody registered."""


class DuplicateModelError(MtcError):
    """Two builders claimed the same name."""


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: `builder(**config) -> nn.Module` and its spec."""

    builder: Callable[..., nn.Module]
    spec: ModelSpec

    def __str__(self) -> str:
        return f"{self.builder.__module__}.{self.builder.__qualname__}"


MODELS: Registry[ModelEntry] = Registry(
    "model", UnknownModelError, DuplicateModelError, listed="registered models"
)


def register_model(
    name: str, spec: ModelSpec
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a builder under `name` with its spec (the decorated builder is returned)."""
    if spec.name != name:
        raise ModelSpecError(f"model {name!r} registered with the spec of {spec.name!r}")

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        MODELS.register(name, ModelEntry(fn, spec))
        return fn

    return deco


def list_models() -> list[str]:
    return MODELS.names()


def get_builder(name: str) -> Callable[..., nn.Module]:
    return MODELS.get(name).builder


def get_spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise ModelSpecError(
            MODELS.unknown_message(name, lead="no spec for model {name}")
            + "; a model that is not registered passes spec= explicitly"
        )
    return MODELS.get(name).spec


def spec_of(model: nn.Module, spec: ModelSpec | None = None) -> ModelSpec:
    """The spec of `model`: the one given, else `model.model_spec`, else the registered spec
    of `model.model_name`."""
    if spec is not None:
        return spec
    own = getattr(model, "model_spec", None)
    if isinstance(own, ModelSpec):
        return own
    name = getattr(model, "model_name", None)
    if isinstance(name, str) and name in MODELS:
        return MODELS.get(name).spec
    raise ModelSpecError(
        f"{type(model).__name__} has no model spec: build it with compressor.build_model, set "
        "model.model_spec, or pass spec= (a compressor.models.ModelSpec)"
    )


def builder_params(name: str) -> tuple[str, ...] | None:
    """The keyword arguments a registered builder takes (None: any, it has **kwargs)."""
    params = inspect.signature(get_builder(name)).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return None
    return tuple(params)


def build_model(name: str, **config) -> nn.Module:
    """Build a registered model; the config kwargs are stored on the model as `model.config`
    so checkpoints can rebuild it."""
    model = get_builder(name)(**config)
    model.model_name = name  # type: ignore[assignment]
    if not hasattr(model, "config"):
        model.config = dict(config)  # type: ignore[assignment]
    return model


def import_official(state_dict: Mapping[str, Any]) -> tuple[str, dict, dict] | None:
    """(model name, config, state dict) when a registered importer recognises the keys."""
    for name, entry in MODELS.items():
        got = entry.spec.importer(state_dict)
        if got is not None:
            return (name, *got)
    return None


def closest_model(keys: Sequence[str]) -> str | None:
    """The registered model whose official keys overlap `keys` most (for error messages):
    scored by how many of the keys each importer's model would produce at default config."""
    best, best_score = None, 0.0
    want = {k.removeprefix("module.") for k in keys}
    for name in MODELS:
        try:
            have = set(build_model(name).state_dict())
        except Exception:  # a builder that needs arguments cannot be scored
            continue
        score = len(want & have) / max(1, len(want | have))
        if score > best_score:
            best, best_score = name, score
    return best
