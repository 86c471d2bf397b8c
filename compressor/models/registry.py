"""Strict model registry: a model is a builder function registered under one name."""

from __future__ import annotations

import difflib
from collections.abc import Callable

from torch import nn

from runtime.errors import MtcError


class UnknownModelError(MtcError):
    """Asked for a model name nobody registered."""


class DuplicateModelError(MtcError):
    """Two builders claimed the same name."""


_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise DuplicateModelError(f"model {name!r} is already registered by {_REGISTRY[name]}")
        _REGISTRY[name] = fn
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


def build_model(name: str, **config) -> nn.Module:
    """Build a registered model; the config kwargs are stored on the model as `model.config`
    so checkpoints can rebuild it."""
    model = get_builder(name)(**config)
    model.model_name = name  # type: ignore[assignment]
    return model
