"""mtc runtime: torch-free inference of exported multi-task models (numpy + OpenCV only).

`load_artifact` and `run` are resolved on first use, so `import runtime` (done by the torch side
for geometry, boxes and metrics) stays as light as numpy + OpenCV.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runtime.pipeline import RunConfig, RunResult, load_artifact, run

__all__ = ["RunConfig", "RunResult", "load_artifact", "run"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from runtime import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'runtime' has no attribute {name!r}")
