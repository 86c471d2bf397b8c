"""Hop 1, second half: simplify the ONNX (constant folding, shape-op cleanup) so TensorRT sees the static
graph it optimises best. A failing simplifier is an error, never a warning: the user asked for a
simplified artifact, and `--simplifier none` is the explicit way to skip it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import onnx

from export.errors import SimplifierError

_PIP = {"onnxslim": "onnxslim", "onnxsim": "onnxsim"}


@dataclass(frozen=True)
class SimplifierInfo:
    """What ran, for the sidecar and the summary."""

    name: str
    version: str | None
    nodes_before: int
    nodes_after: int


def simplifier_version(name: str) -> str | None:
    """Version of an importable simplifier; `SimplifierError` naming the pip package if not."""
    if name == "none":
        return None
    try:
        mod = _import(name)
    except ImportError:
        raise SimplifierError(
            f"--simplifier {name} is not installed; `pip install {_PIP[name]}`, or pick "
            "--simplifier onnxslim (the default) or --simplifier none"
        ) from None
    return str(getattr(mod, "__version__", "unknown"))


def _import(name: str) -> Any:
    """The simplifier's module (imported only when chosen: each is optional)."""
    if name == "onnxslim":
        import onnxslim

        return onnxslim
    import onnxsim

    return onnxsim


def _run_onnxslim(model: onnx.ModelProto) -> onnx.ModelProto:
    import onnxslim

    return onnxslim.slim(model)


def _run_onnxsim(model: onnx.ModelProto) -> onnx.ModelProto:
    import onnxsim

    simplified, ok = onnxsim.simplify(model)
    if not ok:
        raise SimplifierError("onnxsim could not validate its simplified model")
    return simplified


_RUNNERS: dict[str, Callable[[onnx.ModelProto], onnx.ModelProto]] = {
    "onnxslim": _run_onnxslim,
    "onnxsim": _run_onnxsim,
}


class SimplifiedOnnx:
    """Lazy: calling runs the chosen simplifier over `onnx_loader()` and returns the new model;
    `info` is filled after the call."""

    def __init__(self, onnx_loader: Callable[[], onnx.ModelProto], simplifier: str = "onnxslim"):
        self.onnx_loader, self.simplifier = onnx_loader, simplifier
        self.info: SimplifierInfo | None = None

    def __call__(self) -> onnx.ModelProto:
        return self.with_info()[0]

    def with_info(self) -> tuple[onnx.ModelProto, SimplifierInfo]:
        version = simplifier_version(self.simplifier)
        model = self.onnx_loader()
        before = len(model.graph.node)
        if self.simplifier == "none":
            self.info = SimplifierInfo("none", None, before, before)
            return model, self.info
        try:
            out = _RUNNERS[self.simplifier](model)
            onnx.checker.check_model(out, full_check=True)
        except SimplifierError:
            raise
        except Exception as e:  # simplifiers raise anything; the message is what matters
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            raise SimplifierError(
                f"{self.simplifier} {version} failed: {first}; retry with --simplifier none "
                "(or the other simplifier) and report the model"
            ) from None
        self.info = SimplifierInfo(self.simplifier, version, before, len(out.graph.node))
        return out, self.info
