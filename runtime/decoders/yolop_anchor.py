"""YOLOP / YOLOv5 anchor-based decode: per level and anchor, sigmoid everything, then
xy = (2 s - 0.5 + cell) * stride and wh = (2 s)^2 * anchor (pixels); obj and class scores are
the sigmoids. Rows are ordered level, anchor, y, x (as YOLOP's Detect flattens them)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from runtime.decoders import DecoderError, register_decoder


def _levels(params: Mapping[str, Any]) -> tuple[np.ndarray, tuple[int, ...]]:
    anchors = np.asarray(params["anchors"], dtype=np.float64)  # (levels, anchors, 2) pixels
    strides = tuple(int(s) for s in params["strides"])
    return anchors, strides


def _rows(input_hw: tuple[int, int], anchors: np.ndarray, strides: tuple[int, ...]) -> int:
    h, w = input_hw
    return sum(anchors.shape[1] * (h // s) * (w // s) for s in strides)


class YolopAnchorDecoder:
    name = "yolop_anchor"

    def check_params(self, params: Mapping[str, Any]) -> None:
        try:
            anchors, strides = _levels(params)
        except (KeyError, TypeError, ValueError) as e:
            raise DecoderError(
                f"decoder {self.name!r} needs 'anchors' (levels x anchors x 2 pixels) and "
                f"'strides' (one per level); got {sorted(params)} ({e})"
            ) from None
        if anchors.ndim != 3 or anchors.shape[2] != 2 or anchors.shape[0] != len(strides):
            raise DecoderError(
                f"decoder {self.name!r}: anchors of shape {list(anchors.shape)} do not match "
                f"{len(strides)} strides (expected [{len(strides)}, A, 2])"
            )

    def candidates(self, input_hw: tuple[int, int], params: Mapping[str, Any]) -> int:
        return _rows(input_hw, *_levels(params))

    def decode(
        self, raw: np.ndarray, input_hw: tuple[int, int], params: Mapping[str, Any]
    ) -> np.ndarray:
        self.check_params(params)
        anchors, strides = _levels(params)
        n = _rows(input_hw, anchors, strides)
        if raw.ndim != 3 or raw.shape[1] != n or raw.shape[2] < 6:
            raise DecoderError(
                f"decoder {self.name!r}: raw detection output {list(raw.shape)}; expected "
                f"[B, {n}, 5 + classes] for input {input_hw[0]}x{input_hw[1]}"
            )
        p = 1.0 / (1.0 + np.exp(-raw.astype(np.float64)))
        out = np.empty_like(p)
        h, w = input_hw
        start = 0
        for level, s in enumerate(strides):
            ny, nx, na = h // s, w // s, anchors.shape[1]
            count = na * ny * nx
            q = p[:, start : start + count].reshape(p.shape[0], na, ny, nx, -1)
            gy, gx = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
            grid = np.stack((gx, gy), -1)[None, None]
            xy = (q[..., :2] * 2.0 - 0.5 + grid) * s
            wh = (q[..., 2:4] * 2.0) ** 2 * anchors[level][None, :, None, None, :]
            dec = np.concatenate((xy, wh, q[..., 4:]), -1)
            out[:, start : start + count] = dec.reshape(p.shape[0], count, -1)
            start += count
        return out


register_decoder(YolopAnchorDecoder())
