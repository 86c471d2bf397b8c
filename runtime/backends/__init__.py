"""Backends: one file each, registered by name. Importing this package registers them all; none
imports its heavy library (onnxruntime, tensorrt, cuda) until a backend is opened."""

from __future__ import annotations

from runtime.backends import cuda_memory, onnxruntime, pycuda_memory, tensorrt  # noqa: F401
from runtime.backends.base import (
    ArtifactLoadError,
    Backend,
    BackendError,
    BackendOptions,
    BackendStateError,
    BackendUnavailableError,
    InputMismatchError,
    InputSpec,
    UnknownBackendError,
    default_backend,
    get_backend,
    list_backends,
    register_backend,
)

__all__ = [
    "ArtifactLoadError",
    "Backend",
    "BackendError",
    "BackendOptions",
    "BackendStateError",
    "BackendUnavailableError",
    "InputMismatchError",
    "InputSpec",
    "UnknownBackendError",
    "default_backend",
    "get_backend",
    "list_backends",
    "register_backend",
]
