"""The input-size rule every command shares (training, evaluation, compression, export): two
positive sides, multiples of the model's stride, at most `MAX_SIDE` each. Checked before any
work, with the nearest valid size in the message: `--imgsz 32000 32000` used to export for
minutes before failing, `--imgsz -32 320` suggested "multiples of 1".

Why 4096: the largest side the built-in models are meant for is BDD's 1280; at 4096x4096 one
float32 input is 192 MiB and the layer outputs of a width-1 YOLOP take about 28 GiB, which no
deploy GPU holds (an export would trace, simplify and build for minutes before failing)."""

from __future__ import annotations

from collections.abc import Sequence

from runtime.errors import MtcError

MAX_SIDE = 4096
# Multiples of 32 satisfy every built-in model's stride (yolop 32, twinlitenet 8): the hint for
# a size checked before the model (and so its stride) is known.
DEFAULT_STRIDE = 32
# Activations of a YOLOP-sized network per input pixel: the sum of every layer's float32 output
# of a width-1 yolop forward, measured at 384x640 (1771 bytes per input pixel; what training
# keeps for the backward pass, inference needs less): a rough guide for the message.
_ACTIVATION_BYTES_PER_PIXEL = 1771


class InputSizeError(MtcError):
    """An input size outside the model's stride rule or the documented maximum."""


def nearest_valid(hw: Sequence[int], stride: int) -> tuple[int, int]:
    """The closest (H, W) with each side a multiple of `stride` in [stride, MAX_SIDE]."""
    top = max(stride, MAX_SIDE // stride * stride)
    out = [min(top, max(stride, round(abs(int(v)) / stride) * stride)) for v in hw]
    return out[0], out[1]


def _gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.1f} GiB"


def memory_estimate(hw: Sequence[int], batch: int = 1) -> str:
    """'one float32 input of batch 1 is 11.4 GiB, its activations roughly 1689.0 GiB' for a batch of float32 images."""
    pixels = int(hw[0]) * int(hw[1]) * max(1, batch)
    return (
        f"one float32 input of batch {max(1, batch)} is {_gib(pixels * 3 * 4)}, its activations "
        f"roughly {_gib(pixels * _ACTIVATION_BYTES_PER_PIXEL)}"
    )


def check_input_size(
    hw: Sequence[int] | None,
    stride: int | None = None,
    *,
    what: str = "--imgsz",
    model: str = "the model",
    batch: int = 1,
    error: type[MtcError] = InputSizeError,
) -> tuple[int, int]:
    """(H, W) as ints, or `error` saying what was received, the rule, and the nearest valid
    size. `stride` None: the model is not known yet (sign, count and maximum only; the hint
    uses DEFAULT_STRIDE)."""
    vals = list(hw) if hw is not None else []
    try:
        ints = [int(v) for v in vals]
    except (TypeError, ValueError, OverflowError):
        ints = []
    if len(ints) != 2 or ints != vals and any(float(v) != i for v, i in zip(vals, ints)):
        raise error(f"{what} takes two integers H W, got {vals}; e.g. {what} 384 640")
    s = stride or DEFAULT_STRIDE
    near = nearest_valid(ints, s)
    got, hint = f"{what} {ints[0]} {ints[1]}", f"try {what} {near[0]} {near[1]}"
    if max(ints) > MAX_SIDE:
        raise error(
            f"{got}: each side must be at most {MAX_SIDE} ({memory_estimate(ints, batch)}); {hint}"
        )
    if stride is None and min(ints) <= 0:
        raise error(
            f"{got}: both sides must be positive (and multiples of the model's stride, checked "
            f"once its checkpoint is read; multiples of {s} fit every built-in model); {hint}"
        )
    if stride is not None and (min(ints) <= 0 or any(v % stride for v in ints)):
        raise error(
            f"{got}: both sides must be positive multiples of {stride} (the stride rule of "
            f"{model}); {hint}"
        )
    return ints[0], ints[1]
