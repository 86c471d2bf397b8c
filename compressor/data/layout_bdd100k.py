"""The official BDD100K release layout: one det JSON list per split, drivable/lane mask PNGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compressor.data.errors import DatasetNotFoundError, LabelError
from compressor.data.image_size import image_size
from compressor.data.layouts import (
    LayoutReader,
    SampleRecord,
    Unlabeled,
    list_images,
    merge_objects,
    read_json,
    register_layout,
)

DRIVABLE_BACKGROUND = 2  # 0 = direct, 1 = alternative, 2 = background
LANE_BACKGROUND = 255  # lane masks encode attributes in the other values


@register_layout
class Bdd100kLayout(LayoutReader):
    name = "bdd100k"
    tree = (
        "images/100k/<split>/*.jpg, labels/det_20/det_<split>.json, "
        "labels/drivable/masks/<split>/*.png, labels/lane/masks/<split>/*.png"
    )

    # Lane masks use every 8-bit value (255 background, the others lane attributes): unchecked.
    mask_values = {"drivable": (frozenset({0, 1, DRIVABLE_BACKGROUND}),)}

    def __init__(self, root: Path, split: str, lane_labels: str) -> None:
        if lane_labels != "wide":
            raise DatasetNotFoundError(
                f"{root}: lane_labels={lane_labels!r} needs thin lane masks, which the bdd100k "
                f"layout does not ship (only labels/lane/masks); use lane_labels='wide' or the "
                f"yolop layout with ll_seg_annotations_thin/"
            )
        super().__init__(root, split, lane_labels)

    @classmethod
    def detect(cls, root: Path) -> bool:
        return (root / "images" / "100k").is_dir() and (root / "labels").is_dir()

    @property
    def det_json(self) -> Path:
        return self.root / "labels" / "det_20" / f"det_{self.split}.json"

    def required_dirs(self) -> list[Path]:
        return [
            self.root / "images" / "100k" / self.split,
            self.det_json.parent,
            self.root / "labels" / "drivable" / "masks" / self.split,
            self.root / "labels" / "lane" / "masks" / self.split,
        ]

    def _labels_by_name(self) -> dict[str, object]:
        if not self.det_json.is_file():
            raise DatasetNotFoundError(
                f"{self.det_json} not found; expected the BDD100K detection labels "
                f"labels/det_20/det_{self.split}.json"
            )
        data = read_json(self.det_json)
        if not isinstance(data, list):
            raise LabelError(f"{self.det_json}: expected a JSON list of frames, got {type(data)}")
        out: dict[str, object] = {}
        for i, frame in enumerate(data):
            if not isinstance(frame, dict) or not isinstance(frame.get("name"), str):
                raise LabelError(f"{self.det_json}: entry {i} has no 'name' (image file name) key")
            out[frame["name"]] = frame.get("labels") or []
        return out

    def scan(self, limit: int | None) -> tuple[list[SampleRecord], list[Unlabeled]]:
        labels = self._labels_by_name()
        img_dir, _, da_dir, ll_dir = self.required_dirs()
        records: list[SampleRecord] = []
        unlabeled: list[Unlabeled] = []
        for img in list_images(img_dir):
            if limit is not None and len(records) >= limit:
                break
            da, ll = da_dir / f"{img.stem}.png", ll_dir / f"{img.stem}.png"
            missing = [str(p) for p in (da, ll) if not p.is_file()]
            if img.name not in labels:
                missing.insert(0, f"an entry {img.name!r} in {self.det_json}")
            if missing:
                unlabeled.append(Unlabeled(img, f"no label file {', '.join(missing)}"))
                continue
            source = Path(f"{self.det_json}[{img.name}]")
            boxes, classes = merge_objects(labels[img.name], source, image_size(img), self.tally)
            records.append(SampleRecord(img.stem, img, da, ll, boxes, classes))
        return records, unlabeled

    @staticmethod
    def decode_drivable(raw: np.ndarray) -> np.ndarray:
        return (raw < DRIVABLE_BACKGROUND).astype(np.uint8)

    @staticmethod
    def decode_lane(raw: np.ndarray) -> np.ndarray:
        return (raw != LANE_BACKGROUND).astype(np.uint8)
