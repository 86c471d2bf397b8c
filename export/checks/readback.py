"""Read back what was written the way the vehicle will: through `runtime.load_artifact` and the
sidecar. Catches a sidecar that does not describe its artifact (names, shapes, dtypes, batch)
before the files leave the export."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from export.errors import ExportError


def check_with_runtime(
    path: Path, images: np.ndarray, expected: dict[str, np.ndarray], atol: float = 1e-5
) -> dict:
    """Run `images` through `runtime.load_artifact(path)` and compare with `expected` (what ONNX
    Runtime gave for the same in-memory graph)."""
    from runtime import load_artifact

    with load_artifact(path) as backend:
        dtype = np.uint8 if images.dtype == np.uint8 else np.float32  # --input uint8
        got = backend.infer(np.ascontiguousarray(images, dtype))
    if set(got) != set(expected):
        raise ExportError(
            f"runtime reads {path.name} with outputs {sorted(got)}, expected {sorted(expected)}"
        )
    worst = 0.0
    for name, ref in expected.items():
        if got[name].shape != ref.shape or got[name].dtype != ref.dtype:
            raise ExportError(
                f"runtime output {name!r} of {path.name} is {got[name].dtype}"
                f"{list(got[name].shape)}, expected {ref.dtype}{list(ref.shape)}"
            )
        worst = max(worst, float(np.abs(got[name].astype(np.float64) - ref).max(initial=0.0)))
    if worst > atol:
        raise ExportError(f"runtime and ONNX Runtime disagree on {path.name} by {worst:.3g}")
    return {"loaded_by": "runtime.load_artifact", "max_abs_vs_ort": worst}


class RuntimeRunner:
    """An artifact opened by the runtime (engines on GPU machines), called like the other
    runners: `runner(images) -> outputs`. Close it (or use it as a context manager)."""

    def __init__(self, path: Path) -> None:
        from runtime import load_artifact

        self._backend = load_artifact(path)

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        return self._backend.infer(np.ascontiguousarray(images, np.float32))

    def close(self) -> None:
        self._backend.close()

    def __enter__(self) -> RuntimeRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
