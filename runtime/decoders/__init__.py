"""Detection decoders: one file each behind one small protocol, named in the sidecar.

A decoder turns a model's raw eval-mode detection output `[B, N, C]` into candidate rows
`[B, N, 5 + nc]` = (cx, cy, w, h, obj, class scores...) in input pixels, which the runtime's NMS
takes. A decoder without objectness writes obj = 1 (the score is then the class score alone).
numpy only: the runtime uses it on the vehicle, the torch side imports it for evaluation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from runtime.errors import MtcError
from runtime.registry import Registry


class DecoderError(MtcError):
    """An unknown decoder name, or parameters/outputs a decoder cannot use."""


class Decoder(Protocol):
    name: str

    def check_params(self, params: Mapping[str, Any]) -> None:
        """Raise DecoderError naming what is missing or wrong."""

    def candidates(self, input_hw: tuple[int, int], params: Mapping[str, Any]) -> int:
        """N: rows the decoder expects for this input size."""

    def decode(
        self, raw: np.ndarray, input_hw: tuple[int, int], params: Mapping[str, Any]
    ) -> np.ndarray:
        """raw [B, N, C] -> rows [B, N, 5 + nc] (cx, cy, w, h, obj, scores) in input pixels."""


DECODERS: Registry[Decoder] = Registry("detection decoder", DecoderError, listed="valid decoders")


def register_decoder(decoder: Decoder) -> Decoder:
    return DECODERS.register(decoder.name, decoder)


def list_decoders() -> list[str]:
    return DECODERS.names()


def get_decoder(name: str) -> Decoder:
    return DECODERS.get(name)


def check_decoder_name(name: str) -> None:
    DECODERS.get(name)


# Built-in decoders register on import (one file each).
from runtime.decoders import anchor_free_dfl as _anchor_free_dfl  # noqa: E402,F401
from runtime.decoders import yolop_anchor as _yolop_anchor  # noqa: E402,F401
