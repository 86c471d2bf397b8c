"""Frames -> network batch, exactly as the sidecar's `preprocess` says.

The batch buffer is allocated once for the largest batch and reused; each frame is letterboxed into
one reused uint8 canvas and normalised channel by channel straight into its slot of the batch, so
the hot path allocates nothing but OpenCV's resize output. Frame sizes may change mid-stream: the
letterbox geometry is computed (and cached) per source size.

An artifact exported with `mtc-export --input uint8` (sidecar input dtype uint8, layout NHWC)
does the cast, channel order, normalisation and layout in its graph: each frame is then
letterboxed straight into its slot of a uint8 [B, H, W, 3] BGR batch and nothing else is done.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from runtime.errors import MtcError
from runtime.geometry import Letterbox, letterbox_image, letterbox_params, stretch_params
from runtime.sidecar import PreprocessInfo

# Network colour order -> which BGR channel feeds network channel 0, 1, 2.
CHANNEL_SOURCES: dict[str, tuple[int, int, int]] = {"RGB": (2, 1, 0), "BGR": (0, 1, 2)}


class PreprocessError(MtcError):
    """Frames that cannot become a batch (too many, wrong shape)."""


class Preprocessor:
    def __init__(
        self, info: PreprocessInfo, max_batch: int, dtype: str = "float32", layout: str = "NCHW"
    ) -> None:
        if max_batch < 1:
            raise PreprocessError(f"max_batch must be >= 1, got {max_batch}")
        if layout not in ("NCHW", "NHWC") or (layout == "NHWC") != (dtype == "uint8"):
            raise PreprocessError(
                f"input {dtype} {layout} is not one the runtime prepares; expected float32 / "
                "float16 NCHW, or uint8 NHWC (mtc-export --input uint8)"
            )
        h, w = info.input_hw
        self.info = info
        self.max_batch = max_batch
        self.layout = layout
        shape = (max_batch, h, w, 3) if layout == "NHWC" else (max_batch, 3, h, w)
        self.batch_buffer = np.zeros(shape, dtype=np.dtype(dtype))
        self._canvas = np.empty((h, w, 3), dtype=np.uint8)
        std = np.asarray(info.std, dtype=np.float64)
        self._gain = (info.scale / std).astype(np.float32)
        self._offset = (-np.asarray(info.mean, dtype=np.float64) / std).astype(np.float32)
        self._sources = CHANNEL_SOURCES[info.color]
        self._fit = letterbox_params if info.letterbox else stretch_params
        self._geometry: dict[tuple[int, int], Letterbox] = {}

    def geometry(self, src_hw: tuple[int, int]) -> Letterbox:
        lb = self._geometry.get(src_hw)
        if lb is None:
            lb = self._geometry[src_hw] = self._fit(src_hw, self.info.input_hw)
        return lb

    def __call__(self, frames: Sequence[np.ndarray]) -> tuple[np.ndarray, list[Letterbox]]:
        """Returns a view of the shared batch buffer (valid until the next call) and the per-frame
        letterboxes needed to map outputs back."""
        n = len(frames)
        if not 1 <= n <= self.max_batch:
            raise PreprocessError(f"got {n} frames; this preprocessor takes 1..{self.max_batch}")
        boxes = []
        for i, img in enumerate(frames):
            if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
                raise PreprocessError(
                    f"frame {i} is {img.dtype} {list(img.shape)}; expected uint8 HxWx3 BGR "
                    "(runtime.sources converts grayscale and BGRA)"
                )
            lb = self.geometry(img.shape[:2])
            if self.layout == "NHWC":  # the graph does the rest
                letterbox_image(img, lb, self.info.pad_value, out=self.batch_buffer[i])
            else:
                letterbox_image(img, lb, self.info.pad_value, out=self._canvas)
                self._normalise(self.batch_buffer[i])
            boxes.append(lb)
        return self.batch_buffer[:n], boxes

    def _normalise(self, out: np.ndarray) -> None:
        for c, src in enumerate(self._sources):
            np.multiply(self._canvas[:, :, src], self._gain[c], out=out[c], casting="unsafe")
            out[c] += self._offset[c]
