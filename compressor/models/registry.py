"""Strict model registry: a model is a builder function registered under one name."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable

from torch import nn

from compressor.models.spec import ModelSpec, ModelSpecError, register_spec
from runtime.errors import MtcError


class UnknownModelError(MtcError):
    """Asked for a model name nobody registered."""


class DuplicateModelError(MtcError):
    """Two builders claimed the same name."""


_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(
    name: str, spec: ModelSpec | None = None
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a builder under `name` with its spec (what the pipeline reads about it)."""
    if spec is not None and spec.name != name:
        raise ModelSpecError(f"model {name!r} registered with the spec of {spec.name!r}")

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise DuplicateModelError(f"model {name!r} is already registered by {_REGISTRY[name]}")
        _REGISTRY[name] = fn
        if spec is not None:
            register_spec(spec)
        return fn

    return deco


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def get_builder(name: str) -> Callable[..., nn.Module]:
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UnknownModelError(
            f"unknown model {name!r}; registered models: {', '.join(list_models())}{hint}"
        )
    return _REGISTRY[name]


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
