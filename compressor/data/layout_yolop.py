"""YOLOP's BDD100K layout: per-image label JSON and per-image mask PNGs, one folder per kind."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compressor.data.errors import LabelError
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

LANE_DIRS: dict[str, str] = {"wide": "ll_seg_annotations", "thin": "ll_seg_annotations_thin"}


def binary_mask(raw: np.ndarray) -> np.ndarray:
    """0/1 masks are taken as they are, 0/255 ones thresholded > 127 (any other value is refused
    before this by the label check, or mapped by DataConfig.mask_map)."""
    if raw.size and int(raw.max()) <= 1:
        return raw.astype(np.uint8)
    return (raw > 127).astype(np.uint8)


@register_layout
class YolopLayout(LayoutReader):
    name = "yolop"
    tree = (
        "images/<split>/*.jpg, det_annotations/<split>/*.json, da_seg_annotations/<split>/*.png, "
        "ll_seg_annotations/<split>/*.png (ll_seg_annotations_thin/ for thin lane labels)"
    )

    mask_values = {
        "drivable": (frozenset({0, 1}), frozenset({0, 255})),
        "lane": (frozenset({0, 1}), frozenset({0, 255})),
    }

    @classmethod
    def detect(cls, root: Path) -> bool:
        return (root / "images").is_dir() and (root / "det_annotations").is_dir()

    def _dir(self, kind: str) -> Path:
        return self.root / kind / self.split

    def required_dirs(self) -> list[Path]:
        kinds = ("images", "det_annotations", "da_seg_annotations", LANE_DIRS[self.lane_labels])
        return [self._dir(k) for k in kinds]

    def scan(self, limit: int | None) -> tuple[list[SampleRecord], list[Unlabeled]]:
        records: list[SampleRecord] = []
        unlabeled: list[Unlabeled] = []
        for img in list_images(self._dir("images")):
            if limit is not None and len(records) >= limit:
                break
            paths = {
                "det": self._dir("det_annotations") / f"{img.stem}.json",
                "drivable": self._dir("da_seg_annotations") / f"{img.stem}.png",
                "lane": self._dir(LANE_DIRS[self.lane_labels]) / f"{img.stem}.png",
            }
            missing = [str(p) for p in paths.values() if not p.is_file()]
            if missing:
                unlabeled.append(Unlabeled(img, f"no label file {', '.join(missing)}"))
                continue
            boxes, classes = merge_objects(
                self._objects(paths["det"]), paths["det"], image_size(img), self.tally
            )
            records.append(
                SampleRecord(img.stem, img, paths["drivable"], paths["lane"], boxes, classes)
            )
        return records, unlabeled

    @staticmethod
    def _objects(path: Path) -> object:
        data = read_json(path)
        try:
            return data["frames"][0]["objects"]  # type: ignore[index]
        except (KeyError, IndexError, TypeError):
            raise LabelError(
                f"{path}: expected BDD per-image JSON with frames[0].objects "
                f"(keys found: {sorted(data) if isinstance(data, dict) else type(data).__name__})"
            ) from None

    @staticmethod
    def decode_drivable(raw: np.ndarray) -> np.ndarray:
        return binary_mask(raw)

    @staticmethod
    def decode_lane(raw: np.ndarray) -> np.ndarray:
        return binary_mask(raw)
