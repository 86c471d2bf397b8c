"""Property tests: whatever bytes or JSON a label file or a checkpoint holds, the parser gives
its named error (LabelError / CheckpointError, both MtcError) or a valid result; never a crash."""

from __future__ import annotations

import io
import json

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from compressor import build_model, load_checkpoint, save_checkpoint
from compressor.checkpoint import CheckpointError
from compressor.data.errors import LabelError
from compressor.data.layout_bdd100k import Bdd100kLayout
from compressor.data.layout_yolop import YolopLayout
from compressor.data.layouts import merge_objects

FUZZ = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "x1",
                    "y1",
                    "x2",
                    "y2",
                    "category",
                    "box2d",
                    "frames",
                    "objects",
                    "name",
                    "labels",
                    "z",
                ]
            ),
            inner,
            max_size=5,
        )
    ),
    max_leaves=16,
)
box = st.fixed_dictionaries(
    {k: json_values | st.floats(allow_nan=True) for k in ("x1", "y1", "x2", "y2")}
)
objects = st.lists(
    st.fixed_dictionaries(
        {"category": st.sampled_from(["car", "truck", "person", "lane"]) | json_values},
        optional={"box2d": box | json_values},
    )
    | json_values,
    max_size=5,
)


@FUZZ
@given(data=st.binary(max_size=300))
@example(data=b"[" * 100_000)
@example(data=b'{"frames": [{"objects": [{"category": "car", "box2d": {"x1": 1e999}}]}]}')
def test_yolop_label_file_any_bytes(tmp_path, data):
    path = tmp_path / "label.json"
    path.write_bytes(data)
    try:
        boxes, classes = merge_objects(YolopLayout._objects(path), path)
    except LabelError as e:
        assert str(path) in str(e)
    else:
        assert boxes.shape == (len(classes), 4)


@FUZZ
@given(objs=objects | json_values)
def test_label_objects_any_structure(tmp_path, objs):
    path = tmp_path / "label.json"
    path.write_text(json.dumps({"frames": [{"objects": objs}]}))
    try:
        boxes, classes = merge_objects(YolopLayout._objects(path), path)
    except LabelError as e:
        assert str(path) in str(e)
    else:
        assert boxes.shape == (len(classes), 4)
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()


@FUZZ
@given(frames=json_values | st.lists(json_values, max_size=4))
def test_bdd100k_label_list_any_structure(tmp_path, frames):
    root = tmp_path / "bdd"
    det = root / "labels" / "det_20"
    det.mkdir(parents=True, exist_ok=True)
    (det / "det_train.json").write_text(json.dumps(frames))
    for sub in ("images/100k/train", "labels/drivable/masks/train", "labels/lane/masks/train"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    layout = Bdd100kLayout(root, "train", "wide")
    try:
        labels = layout._labels_by_name()
        for objs in labels.values():
            merge_objects(objs, det / "det_train.json")
    except LabelError as e:
        assert "det_train.json" in str(e)


@pytest.fixture(scope="module")
def good_payload() -> bytes:
    buf = io.BytesIO()
    model = build_model("yolop", width=0.25, depth=0.33)
    from compressor.checkpoint import Checkpoint

    sd = {k: v for k, v in list(model.state_dict().items())[:3]}
    torch.save(Checkpoint("yolop", {"width": 0.25, "depth": 0.33}, sd).to_payload(), buf)
    return buf.getvalue()


@FUZZ
@given(data=st.binary(max_size=400))
@example(data=b"")
@example(data=b"PK\x03\x04" + b"\x00" * 40)
@example(data=b"\x80\x02}q\x00.")
def test_checkpoint_any_bytes(tmp_path, data):
    path = tmp_path / "x.pt"
    path.write_bytes(data)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert str(path) in str(e.value) and "weights_only=False" not in str(e.value)


@FUZZ
@given(cut=st.integers(min_value=0), flip=st.integers(min_value=0), byte=st.integers(0, 255))
def test_checkpoint_truncated_or_flipped(tmp_path, good_payload, cut, flip, byte):
    data = bytearray(good_payload[: cut % len(good_payload)] if cut % 3 else good_payload)
    if data:
        data[flip % len(data)] = byte
    path = tmp_path / "x.pt"
    path.write_bytes(bytes(data))
    try:
        load_checkpoint(path)
    except CheckpointError as e:
        assert "weights_only=False" not in str(e)


@FUZZ
@given(
    payload=st.dictionaries(
        st.sampled_from(
            [
                "format",
                "format_version",
                "model",
                "state_dict",
                "pruning",
                "preprocess",
                "train_state",
                "tasks",
            ]
        ),
        json_values,
        max_size=6,
    )
)
def test_checkpoint_any_payload_structure(tmp_path, payload):
    payload = {"format": "mtc-checkpoint", "format_version": 1, **payload}
    path = tmp_path / "x.pt"
    try:
        torch.save(payload, path)
    except (OverflowError, RuntimeError):
        return  # torch cannot even write it
    try:
        load_checkpoint(path)
    except CheckpointError as e:
        assert str(path) in str(e)


def test_a_saved_checkpoint_still_loads(tmp_path):
    path = tmp_path / "ok.pt"
    save_checkpoint(path, build_model("yolop", width=0.25, depth=0.33))
    _, ckpt = load_checkpoint(path)
    assert ckpt.model_name == "yolop"
