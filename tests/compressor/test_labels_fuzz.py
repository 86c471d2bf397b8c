"""Property tests for the label check and the input-size rule: random boxes, category names and
mask values always give either a valid result with exact counts or the named error."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compressor.data.image_size import image_size
from compressor.data.labels import (
    KNOWN_CATEGORIES,
    LabelTally,
    MaskValueError,
    apply_mask_map,
    check_box,
    check_mask,
)
from compressor.data.layouts import merge_objects
from runtime.input_size import MAX_SIDE, InputSizeError, check_input_size

PROPS = settings(max_examples=200, deadline=None)
coord = st.floats(min_value=-5000, max_value=5000, allow_nan=False) | st.integers(-5000, 5000)
sizes = st.tuples(st.integers(1, 2000), st.integers(1, 2000))
names = st.sampled_from(sorted(KNOWN_CATEGORIES)) | st.text(max_size=10)


@PROPS
@given(box=st.tuples(coord, coord, coord, coord), wh=sizes)
def test_a_box_is_kept_inside_the_image_or_dropped_and_counted(box, wh):
    tally = LabelTally()
    b = tuple(float(v) for v in box)
    got = check_box(b, wh, "f.json", tally)  # type: ignore[arg-type]
    x1, y1, x2, y2 = b
    if not (x2 > x1 and y2 > y1):
        assert got is None and dict(tally.counts) == {"degenerate": 1}
    elif got is None:
        assert dict(tally.counts) == {"outside": 1}
        assert x2 <= 0 or y2 <= 0 or x1 >= wh[0] or y1 >= wh[1]
    else:
        gx1, gy1, gx2, gy2 = got
        assert 0 <= gx1 < gx2 <= wh[0] and 0 <= gy1 < gy2 <= wh[1]
        inside = x1 >= 0 and y1 >= 0 and x2 <= wh[0] and y2 <= wh[1]
        assert (got == b) == inside
        assert dict(tally.counts) == ({} if inside else {"clipped": 1})


@PROPS
@given(
    objs=st.lists(
        st.tuples(names, st.tuples(coord, coord, coord, coord), st.booleans()), max_size=12
    ),
    wh=sizes,
)
def test_category_names_are_merged_ignored_or_unknown_by_name(objs, wh):
    objects = [
        {"category": n, **({"box2d": dict(zip(("x1", "y1", "x2", "y2"), b))} if has else {})}
        for n, b, has in objs
    ]
    tally = LabelTally()
    boxes, classes = merge_objects(objects, Path("f.json"), wh, tally)
    with_box = [n for n, _, has in objs if has]
    assert tally.unknown == Counter(n for n in with_box if n not in KNOWN_CATEGORIES)
    vehicles = sum(n in ("car", "bus", "truck", "train") for n in with_box)
    ignored = sum(n in KNOWN_CATEGORIES for n in with_box) - vehicles
    assert sum(tally.ignored.values()) == ignored
    assert len(boxes) == len(classes) == tally.boxes_kept
    assert len(boxes) + tally.counts["outside"] + tally.counts["degenerate"] == vehicles
    if len(boxes):
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert boxes[:, [0, 1]].min() >= 0 and (boxes[:, [0, 2]] <= wh[0]).all()


DECLARED = (frozenset({0, 1}), frozenset({0, 255}))


@PROPS
@given(values=st.lists(st.integers(0, 255), min_size=1, max_size=6), seed=st.integers(0, 99))
def test_mask_values_outside_the_classes_are_refused_or_mapped(values, seed):
    raw = np.random.default_rng(seed).choice(np.array(values, np.uint8), size=(7, 9))
    present = {int(v) for v in np.unique(raw)}
    valid = any(present <= d for d in DECLARED)
    path = Path("masks/x.png")
    if valid:
        out, used = check_mask(raw, "drivable", DECLARED, path, "yolop")
        assert out is raw and used == []
    else:
        with pytest.raises(MaskValueError) as e:
            check_mask(raw, "drivable", DECLARED, path, "yolop")
        assert str(path) in str(e.value) and "--mask-map drivable:" in str(e.value)
    # mapping every value but 0 to class 1 is always accepted and gives exactly raw != 0
    cleared, used = check_mask(raw, "drivable", DECLARED, path, "yolop", (("drivable", 1, 255, 1),))
    decoded = apply_mask_map((cleared > 127).astype(np.uint8), raw, used)
    assert np.array_equal(decoded, (raw != 0).astype(np.uint8))


@PROPS
@given(
    hw=st.tuples(st.integers(-(10**6), 10**6), st.integers(-(10**6), 10**6)),
    stride=st.sampled_from([None, 1, 8, 16, 32, 64]),
)
def test_input_size_is_valid_or_refused_with_a_valid_hint(hw, stride):
    try:
        got = check_input_size(hw, stride, model="m")
    except InputSizeError as e:
        msg = str(e)
        assert f"--imgsz {hw[0]} {hw[1]}" in msg and "try --imgsz " in msg
        hint = [int(v) for v in msg.rsplit("try --imgsz ", 1)[1].split()]
        assert check_input_size(hint, stride, model="m") == tuple(hint)  # the hint is valid
        assert min(hw) <= 0 or max(hw) > MAX_SIDE or (stride and any(v % stride for v in hw))
    else:
        assert got == hw and min(hw) > 0 and max(hw) <= MAX_SIDE
        assert not stride or all(v % stride == 0 for v in hw)


@PROPS
@given(
    body=st.binary(max_size=200), prefix=st.sampled_from([b"\xff\xd8", b"\x89PNG\r\n\x1a\n", b""])
)
def test_image_size_of_any_bytes_is_a_size_or_none(tmp_path_factory, body, prefix):
    path = tmp_path_factory.mktemp("img") / "x.jpg"
    path.write_bytes(prefix + body)
    got = image_size(path)
    assert got is None or (len(got) == 2 and min(got) > 0)


@pytest.mark.parametrize(
    "suffix, params", [(".jpg", []), (".jpg", [1, 1]), (".png", []), (".bmp", [])]
)
def test_image_size_reads_the_header(tmp_path, suffix, params):
    import cv2

    path = tmp_path / f"x{suffix}"
    flags = [cv2.IMWRITE_JPEG_PROGRESSIVE, 1] if params else []
    assert cv2.imwrite(str(path), np.zeros((37, 53, 3), np.uint8), flags)
    assert image_size(path) == (53, 37)
