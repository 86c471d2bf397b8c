"""Detection decoders (runtime.decoders): the numpy decode each runtime artifact relies on equals
its model's own PyTorch decode, before and after NMS; hand-computed boxes; strict registry and
errors that name what was expected. The torch parity tests skip where torch is not installed
(a runtime-only image)."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.boxes import postprocess_detections
from runtime.decoders import DecoderError, check_decoder_name, get_decoder, list_decoders

AF = "anchor_free_dfl"
STRIDES = (8, 16, 32)


def _raw(rng: np.random.Generator, b: int, n: int, reg_max: int, nc: int) -> np.ndarray:
    return (rng.normal(size=(b, n, 4 * reg_max + nc)) * 3).astype(np.float32)


def _nms(rows: np.ndarray) -> list[np.ndarray]:
    return postprocess_detections(rows, conf_thres=0.25, iou_thres=0.45, max_det=300)


@pytest.mark.parametrize(
    ("hw", "reg_max", "nc"), [((64, 128), 16, 1), ((96, 96), 8, 3), ((32, 64), 16, 2)]
)
def test_anchor_free_numpy_equals_torch_decode_before_and_after_nms(hw, reg_max, nc):
    torch = pytest.importorskip("torch")
    from compressor.models.heads import decode_torch

    dec = get_decoder(AF)
    params = {"strides": list(STRIDES), "reg_max": reg_max}
    n = dec.candidates(hw, params)
    assert n == sum((hw[0] // s) * (hw[1] // s) for s in STRIDES)
    raw = _raw(np.random.default_rng(sum(hw) + nc), 2, n, reg_max, nc)
    ours = dec.decode(raw, hw, params)
    assert ours.shape == (2, n, 5 + nc)
    for dtype, rtol in ((torch.float64, 1e-9), (torch.float32, 1e-5)):
        ref = decode_torch(torch.from_numpy(raw).to(dtype), hw, STRIDES, reg_max).numpy()
        # float32: absolute 1e-4 px where a coordinate cancels to near 0 (x1 + x2 ~ 0)
        np.testing.assert_allclose(ours, ref, rtol=rtol, atol=1e-12 if rtol < 1e-6 else 1e-4)
    kept_np, kept_t = _nms(ours), _nms(ref)  # ref: the float32 torch decode
    assert sum(len(k) for k in kept_np) > 2 * nc  # the comparison is not vacuous
    for a, b in zip(kept_np, kept_t):
        assert a.shape == b.shape
        np.testing.assert_allclose(a[:, :4], b[:, :4], atol=1e-3)
        np.testing.assert_array_equal(a[:, 5], b[:, 5])


def _one_hot_row(raw: np.ndarray, row: int, bins: tuple[int, int, int, int], reg_max: int):
    raw[0, row, : 4 * reg_max] = -50.0
    for side, k in enumerate(bins):
        raw[0, row, side * reg_max + k] = 50.0


def test_anchor_free_hand_computed_boxes():
    """One level-0 cell and one level-1 cell with one-hot side distributions (rows are ordered
    level, y, x; bins side-major left, top, right, bottom)."""
    dec, reg_max, hw = get_decoder(AF), 4, (16, 32)
    params = {"strides": [8, 16], "reg_max": reg_max}
    assert dec.candidates(hw, params) == 2 * 4 + 1 * 2
    raw = np.zeros((1, 10, 4 * reg_max + 2), np.float32)
    raw[0, :, 4 * reg_max :] = [0.0, np.log(3.0)]  # class scores 0.5 and 0.75
    # level 0 (stride 8), y=1, x=2: point (2.5, 1.5) cells; l,t,r,b = 1,0,3,2 cells
    # -> x1,y1,x2,y2 = (1.5, 1.5, 5.5, 3.5) * 8 = (12, 12, 44, 28)
    _one_hot_row(raw, 1 * 4 + 2, (1, 0, 3, 2), reg_max)
    # level 1 (stride 16), y=0, x=1 (row 8 + 1): point (1.5, 0.5); l=t=r=b=1
    # -> (0.5, -0.5, 2.5, 1.5) * 16 = (8, -8, 40, 24)
    _one_hot_row(raw, 9, (1, 1, 1, 1), reg_max)
    out = dec.decode(raw, hw, params)
    np.testing.assert_allclose(out[0, 6], [28, 20, 32, 16, 1.0, 0.5, 0.75], atol=1e-9)
    np.testing.assert_allclose(out[0, 9], [24, 8, 32, 32, 1.0, 0.5, 0.75], atol=1e-9)
    # all-zero logits: uniform bins, every side (reg_max - 1) / 2 = 1.5 cells from the point
    # level 0, y=0, x=0: point (0.5, 0.5) -> box (-1, -1, 2, 2) cells -> cx, cy 4, w, h 24
    np.testing.assert_allclose(out[0, 0, :5], [4, 4, 24, 24, 1.0], atol=1e-9)


def test_yolop_anchor_numpy_equals_detect_decode():
    torch = pytest.importorskip("torch")
    from compressor.models.common import Detect
    from compressor.models.yolop import YOLOP_ANCHORS, YOLOP_STRIDES

    nc, hw = 2, (64, 96)
    detect = Detect(nc, YOLOP_ANCHORS, YOLOP_STRIDES, (8, 8, 8))
    g = torch.Generator().manual_seed(0)
    raw = [
        torch.randn(2, 3, hw[0] // s, hw[1] // s, 5 + nc, generator=g) * 2 for s in YOLOP_STRIDES
    ]
    ref = detect.decode(raw).numpy()
    flat = np.concatenate([r.reshape(2, -1, 5 + nc).numpy() for r in raw], 1)  # level, a, y, x
    dec = get_decoder("yolop_anchor")
    params = {"anchors": [list(map(list, lv)) for lv in YOLOP_ANCHORS], "strides": YOLOP_STRIDES}
    assert dec.candidates(hw, params) == flat.shape[1]
    ours = dec.decode(flat, hw, params)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)
    kept_np, kept_t = _nms(ours), _nms(ref)
    assert sum(len(k) for k in kept_np) > 0
    for a, b in zip(kept_np, kept_t):
        np.testing.assert_allclose(a, b, atol=1e-3)


def test_registry_lists_both_and_rejects_unknown_names():
    assert {AF, "yolop_anchor"} <= set(list_decoders())
    with pytest.raises(DecoderError, match=r"valid decoders: .*anchor_free_dfl.*yolop_anchor") as e:
        get_decoder("anchor_free")
    assert "did you mean 'anchor_free_dfl'" in str(e.value)
    with pytest.raises(DecoderError, match="unknown detection decoder 'nope'"):
        check_decoder_name("nope")


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({}, ["'strides'", "'reg_max'", "got []"]),
        ({"strides": [8, 16]}, ["'reg_max'", "got ['strides']"]),
        ({"strides": 8, "reg_max": 16}, ["'strides'"]),
        ({"strides": [8, 16], "reg_max": 2.5}, ["reg_max 2.5 is not an integer"]),
        ({"strides": [8, 16], "reg_max": 0}, ["reg_max 0", "expected an int >= 1"]),
        ({"strides": [], "reg_max": 16}, ["strides []", "one positive int per level"]),
        ({"strides": [8, 0], "reg_max": 16}, ["strides [8, 0]"]),
    ],
)
def test_anchor_free_bad_params_name_the_problem(params, words):
    with pytest.raises(DecoderError) as e:
        get_decoder(AF).check_params(params)
    for w in words:
        assert w in str(e.value)


@pytest.mark.parametrize(
    ("shape", "words"),
    [
        ((1, 167, 65), ["[1, 167, 65]", "[B, 168, 64 + classes]", "input 64x128"]),
        ((1, 168, 64), ["[1, 168, 64]", "[B, 168, 64 + classes]"]),  # no class channels
        ((168, 65), ["[168, 65]", "expected [B, 168"]),
    ],
)
def test_anchor_free_bad_raw_shape_names_expected_and_received(shape, words):
    with pytest.raises(DecoderError) as e:
        get_decoder(AF).decode(
            np.zeros(shape, np.float32), (64, 128), {"strides": STRIDES, "reg_max": 16}
        )
    for w in words:
        assert w in str(e.value)


def test_yolop_anchor_bad_inputs_name_the_problem():
    dec = get_decoder("yolop_anchor")
    with pytest.raises(DecoderError, match="needs 'anchors'"):
        dec.check_params({"strides": [8]})
    with pytest.raises(DecoderError, match=r"do not match 2 strides \(expected \[2, A, 2\]\)"):
        dec.check_params({"anchors": [[[1, 2]]], "strides": [8, 16]})
    params = {"anchors": [[[4, 4]]], "strides": [8]}
    with pytest.raises(DecoderError, match=r"\[1, 5, 6\]; expected \[B, 8, 5 \+ classes\]"):
        dec.decode(np.zeros((1, 5, 6)), (16, 32), params)
