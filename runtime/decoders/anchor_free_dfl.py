"""Anchor-free DFL decode (YOLOv8 / A-YOLOM style), numpy only.

Raw rows `[B, N, 4 * reg_max + nc]`, ordered level, y, x (each level's map flattened row-major).
The first 4 * reg_max channels are four side distributions, side-major (left, top, right,
bottom; `reg_max` bins each, bin k = distance k in grid cells): softmax over the bins, the
expectation is the side's distance from the anchor point (the cell centre, x + 0.5, y + 0.5).
Box = (point - (left, top), point + (right, bottom)) * stride. The rest are class logits; there is
no objectness, so obj = 1 and the score is the class sigmoid alone (the runtime's obj * class).
The torch side's `decode_torch` (compressor/models/heads/anchor_free.py) computes the same rows.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np

from runtime.decoders import DecoderError, register_decoder


def _levels(params: Mapping[str, Any]) -> tuple[tuple[int, ...], int]:
    strides = tuple(int(s) for s in params["strides"])
    reg_max = params["reg_max"]
    if isinstance(reg_max, bool) or int(reg_max) != reg_max:
        raise ValueError(f"reg_max {reg_max!r} is not an integer")
    return strides, int(reg_max)


@functools.lru_cache(maxsize=8)
def anchor_points(
    input_hw: tuple[int, int], strides: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Cell centres in grid units [N, 2] (x, y) and each row's stride [N, 1], rows ordered level,
    y, x. Cached (the runtime decodes every frame at one size): the arrays are read-only."""
    h, w = input_hw
    points, row_strides = [], []
    for s in strides:
        ny, nx = h // s, w // s
        gy, gx = np.meshgrid(np.arange(ny) + 0.5, np.arange(nx) + 0.5, indexing="ij")
        points.append(np.stack((gx, gy), -1).reshape(-1, 2))
        row_strides.append(np.full((ny * nx, 1), float(s)))
    pts, rs = np.concatenate(points, 0), np.concatenate(row_strides, 0)
    pts.flags.writeable = rs.flags.writeable = False
    return pts, rs


class AnchorFreeDflDecoder:
    name = "anchor_free_dfl"

    def check_params(self, params: Mapping[str, Any]) -> None:
        try:
            strides, reg_max = _levels(params)
        except (KeyError, TypeError, ValueError) as e:
            raise DecoderError(
                f"decoder {self.name!r} needs 'strides' (one positive int per level, e.g. "
                f"[8, 16, 32]) and 'reg_max' (bins per box side, e.g. 16); got "
                f"{sorted(params)} ({e})"
            ) from None
        if not strides or min(strides) < 1:
            raise DecoderError(
                f"decoder {self.name!r}: strides {list(strides)}; expected one positive int per "
                "level, e.g. [8, 16, 32]"
            )
        if reg_max < 1:
            raise DecoderError(
                f"decoder {self.name!r}: reg_max {reg_max}; expected an int >= 1 (bins per box "
                "side, 16 in YOLOv8)"
            )

    def candidates(self, input_hw: tuple[int, int], params: Mapping[str, Any]) -> int:
        strides, _ = _levels(params)
        h, w = input_hw
        return sum((h // s) * (w // s) for s in strides)

    def decode(
        self, raw: np.ndarray, input_hw: tuple[int, int], params: Mapping[str, Any]
    ) -> np.ndarray:
        self.check_params(params)
        strides, reg_max = _levels(params)
        n = sum((input_hw[0] // s) * (input_hw[1] // s) for s in strides)
        nbox = 4 * reg_max
        if raw.ndim != 3 or raw.shape[1] != n or raw.shape[2] <= nbox:
            raise DecoderError(
                f"decoder {self.name!r}: raw detection output {list(raw.shape)}; expected "
                f"[B, {n}, {nbox} + classes] (4 x reg_max {reg_max} box bins, then class "
                f"logits) for input {input_hw[0]}x{input_hw[1]} and strides {list(strides)}"
            )
        x = raw.astype(np.float64)
        b = x.shape[0]
        logits = x[..., :nbox].reshape(b, n, 4, reg_max)
        e = np.exp(logits - logits.max(-1, keepdims=True))
        dist = (e * np.arange(reg_max)).sum(-1) / e.sum(-1)  # [B, N, 4] grid units
        points, row_strides = anchor_points(tuple(input_hw), strides)
        x1y1 = points - dist[..., :2]
        x2y2 = points + dist[..., 2:]
        out = np.empty((b, n, 5 + x.shape[2] - nbox), dtype=np.float64)
        out[..., 0:2] = (x1y1 + x2y2) * 0.5 * row_strides
        out[..., 2:4] = (x2y2 - x1y1) * row_strides
        out[..., 4] = 1.0
        out[..., 5:] = 1.0 / (1.0 + np.exp(-x[..., nbox:]))
        return out


register_decoder(AnchorFreeDflDecoder())
