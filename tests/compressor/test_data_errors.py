"""Every bad-input error names the file and says what is wrong."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from compressor.data import BddDataset, DataConfig
from compressor.data.errors import (
    DatasetNotFoundError,
    EmptyDatasetError,
    ImageReadError,
    LabelError,
    MaskSizeError,
    UnlabeledImagesWarning,
)
from runtime.errors import MtcError


def test_errors_are_mtc_errors():
    for cls in (DatasetNotFoundError, EmptyDatasetError, ImageReadError, LabelError, MaskSizeError):
        assert issubclass(cls, MtcError)


def test_missing_root(tmp_path: Path):
    with pytest.raises(DatasetNotFoundError, match=r"nowhere does not exist.*mtc-synth"):
        BddDataset(tmp_path / "nowhere", "train")


def test_folder_with_no_known_layout_lists_both(tmp_path: Path):
    with pytest.raises(DatasetNotFoundError) as e:
        BddDataset(tmp_path, "train")
    assert "det_annotations/<split>" in str(e.value) and "labels/det_20" in str(e.value)


def test_missing_split_lists_the_missing_folders(tiny_yolop_factory):
    root = tiny_yolop_factory()
    with pytest.raises(DatasetNotFoundError, match=r"split 'val'.*images/val"):
        BddDataset(root, "val")


def test_thin_lanes_requested_but_absent(tiny_yolop_factory):
    root = tiny_yolop_factory()
    with pytest.raises(DatasetNotFoundError, match="ll_seg_annotations_thin/train"):
        BddDataset(root, "train", DataConfig(lane_labels="thin"))


def _add_unlabeled_image(root: Path) -> Path:
    extra = root / "images/train/zz_extra.png"
    shutil.copy(root / "images/train/img0.png", extra)
    return extra


def test_unlabeled_image_is_skipped_with_a_counted_warning(tiny_yolop_factory):
    root = tiny_yolop_factory()
    _add_unlabeled_image(root)
    with pytest.warns(UnlabeledImagesWarning, match=r"skipped 1 unlabeled.*zz_extra\.png"):
        ds = BddDataset(root, "train")
    assert len(ds) == 1 and ds.skipped == 1


def test_unlabeled_image_is_an_error_when_not_skipping(tiny_yolop_factory):
    root = tiny_yolop_factory()
    _add_unlabeled_image(root)
    with pytest.raises(LabelError, match=r"zz_extra\.png: no label file .*zz_extra\.json"):
        BddDataset(root, "train", DataConfig(skip_unlabeled=False))


def test_only_unlabeled_images_is_an_empty_dataset(tiny_yolop_factory):
    root = tiny_yolop_factory()
    (root / "det_annotations/train/img0.json").unlink()
    with pytest.warns(UnlabeledImagesWarning), pytest.raises(EmptyDatasetError, match="1 skipped"):
        BddDataset(root, "train")


def test_unreadable_image(tiny_yolop_factory):
    root = tiny_yolop_factory()
    (root / "images/train/img0.png").write_bytes(b"not an image at all")
    ds = BddDataset(root, "train")
    with pytest.raises(ImageReadError, match=r"img0\.png: OpenCV cannot decode"):
        ds[0]


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("{not json", r"img0\.json: malformed label JSON \(Expecting property name"),
        (json.dumps({"name": "img0"}), r"img0\.json: expected .*frames\[0\]\.objects.*\['name'\]"),
        (json.dumps({"frames": [{"objects": [{"box2d": {}}]}]}), r"object 0 has no 'category'"),
        (
            json.dumps({"frames": [{"objects": [{"category": "car", "box2d": {"x1": "a"}}]}]}),
            r"img0\.json: object 0 \(car\) has a bad box2d",
        ),
    ],
)
def test_malformed_label_json(tiny_yolop_factory, content: str, needle: str):
    root = tiny_yolop_factory()
    (root / "det_annotations/train/img0.json").write_text(content)
    with pytest.raises(LabelError, match=needle):
        BddDataset(root, "train")


def test_mask_size_differs_from_image(tiny_yolop_factory):
    root = tiny_yolop_factory(size=(100, 200))
    cv2.imwrite(str(root / "da_seg_annotations/train/img0.png"), np.zeros((50, 80), np.uint8))
    ds = BddDataset(root, "train")
    with pytest.raises(MaskSizeError, match=r"img0\.png: mask is 80x50 but its image is 200x100"):
        ds[0]


def _bdd100k_root(tmp_path: Path) -> Path:
    root = tmp_path / "bdd100k"
    for d in (
        "images/100k/train",
        "labels/det_20",
        "labels/drivable/masks/train",
        "labels/lane/masks/train",
    ):
        (root / d).mkdir(parents=True)
    cv2.imwrite(str(root / "images/100k/train/a.jpg"), np.zeros((8, 8, 3), np.uint8))
    return root


def test_bdd100k_malformed_det_json_and_missing_name(tmp_path: Path):
    root = _bdd100k_root(tmp_path)
    det = root / "labels/det_20/det_train.json"
    det.write_text("[{")
    with pytest.raises(LabelError, match=r"det_train\.json: malformed label JSON"):
        BddDataset(root, "train")
    det.write_text(json.dumps([{"labels": []}]))
    with pytest.raises(LabelError, match=r"det_train\.json: entry 0 has no 'name'"):
        BddDataset(root, "train")


def test_bdd100k_missing_det_json_and_thin_lanes(tmp_path: Path):
    root = _bdd100k_root(tmp_path)
    with pytest.raises(DatasetNotFoundError, match=r"det_train\.json not found"):
        BddDataset(root, "train")
    with pytest.raises(DatasetNotFoundError, match="does not ship"):
        BddDataset(root, "train", DataConfig(lane_labels="thin"))
