"""Readers for the two on-disk layouts of BDD100K, behind a strict registry.

A reader knows where one layout keeps images, boxes and masks, and how its mask values encode
"drivable" and "lane". Everything after that (class merge, letterbox, augmentation) is shared, so
the same image loads to the same batch from either layout.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from compressor.data.errors import DataConfigError, DatasetNotFoundError, LabelError
from compressor.data.labels import LabelTally, check_box, count_category
from runtime.registry import Registry
from runtime.spec import DET_CLASSES

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png")
VEHICLE_CLASS = DET_CLASSES.index("vehicle")


@dataclass(frozen=True)
class SampleRecord:
    """One labelled image: paths plus its boxes after the class merge (original pixels)."""

    name: str
    image: Path
    drivable: Path
    lane: Path
    boxes: np.ndarray  # (K, 4) float64 xyxy
    classes: np.ndarray  # (K,) int64


@dataclass(frozen=True)
class Unlabeled:
    image: Path
    reason: str


def merge_objects(
    objects: object,
    source: Path,
    image_wh: tuple[int, int] | None = None,
    tally: LabelTally | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """BDD objects -> vehicle boxes. Objects without box2d (lane/drivable polygons) are skipped;
    categories outside VEHICLE_CATEGORIES are dropped (YOLOP's single-class merge), counted in
    `tally` as ignored (a known BDD name) or unknown. Boxes go through the label check
    (`compressor.data.labels.check_box`): clipped to `image_wh`, degenerate or outside dropped."""
    if not isinstance(objects, list):
        raise LabelError(f"{source}: expected a list of objects, got {type(objects).__name__}")
    boxes: list[tuple[float, float, float, float]] = []
    for i, obj in enumerate(objects):
        if not isinstance(obj, dict) or "category" not in obj:
            raise LabelError(f"{source}: object {i} has no 'category' key (got {obj!r:.80})")
        if not isinstance(obj["category"], str):
            raise LabelError(
                f"{source}: object {i} has category {obj['category']!r:.40}; expected a name"
            )
        box = obj.get("box2d")
        if box is None or not count_category(obj["category"], source, tally):
            continue
        try:
            x1, y1, x2, y2 = (float(box[k]) for k in ("x1", "y1", "x2", "y2"))
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise LabelError(
                f"{source}: object {i} ({obj['category']}) has a bad box2d {box!r:.80}; "
                f"expected numbers x1, y1, x2, y2 ({type(exc).__name__}: {exc})"
            ) from None
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
            raise LabelError(
                f"{source}: object {i} ({obj['category']}) has a non-finite box2d "
                f"{[x1, y1, x2, y2]}; expected finite pixel coordinates"
            )
        kept = check_box((x1, y1, x2, y2), image_wh, source, tally)
        if kept is not None:
            boxes.append(kept)
    if tally is not None:
        tally.boxes_kept += len(boxes)
    arr = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return arr, np.full(len(arr), VEHICLE_CLASS, dtype=np.int64)


def read_json(path: Path) -> object:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise LabelError(f"{path}: malformed label JSON ({exc})") from None
    except UnicodeDecodeError as exc:
        raise LabelError(f"{path}: label file is not UTF-8 text ({exc})") from None
    except RecursionError:
        raise LabelError(f"{path}: label JSON is nested too deeply to be a BDD label") from None


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


class LayoutReader(ABC):
    """One data-set layout. Construction checks the split's folders exist; `scan` lists samples."""

    name: ClassVar[str]
    tree: ClassVar[str]  # human description of the expected folders, for error messages
    # Raw mask values each task may hold: the mask's values must lie within one of the sets
    # (empty: not checked). Anything else is refused unless DataConfig.mask_map maps it.
    mask_values: ClassVar[dict[str, tuple[frozenset[int], ...]]] = {}

    def __init__(self, root: Path, split: str, lane_labels: str) -> None:
        self.root, self.split, self.lane_labels = Path(root), split, lane_labels
        self.tally = LabelTally()  # what the label check did during `scan`
        missing = [str(p) for p in self.required_dirs() if not p.is_dir()]
        if missing:
            raise DatasetNotFoundError(
                f"{self.root} ({self.name} layout, split {split!r}) is missing "
                f"{', '.join(missing)}; expected {self.tree}"
            )

    @classmethod
    @abstractmethod
    def detect(cls, root: Path) -> bool: ...

    @abstractmethod
    def required_dirs(self) -> list[Path]: ...

    @abstractmethod
    def scan(self, limit: int | None) -> tuple[list[SampleRecord], list[Unlabeled]]: ...

    @staticmethod
    @abstractmethod
    def decode_drivable(raw: np.ndarray) -> np.ndarray: ...

    @staticmethod
    @abstractmethod
    def decode_lane(raw: np.ndarray) -> np.ndarray: ...


# Registration order is the order `auto` tries the layouts in.
LAYOUTS: Registry[type[LayoutReader]] = Registry("data layout", DataConfigError, also=("auto",))


def register_layout(cls: type[LayoutReader]) -> type[LayoutReader]:
    return LAYOUTS.register(cls.name, cls)


def get_layout(name: str) -> type[LayoutReader]:
    return LAYOUTS.get(name)


def resolve_layout(root: Path, name: str) -> type[LayoutReader]:
    """`auto` picks the first registered layout whose marker folders exist under root."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError(
            f"data set root {root} does not exist or is not a folder; pass the folder that holds "
            f"images/ (make one with `mtc-synth --out {root}`)"
        )
    if name != "auto":
        return get_layout(name)
    for cls in LAYOUTS.values():
        if cls.detect(root):
            return cls
    expected = "; or ".join(f"{c.name}: {c.tree}" for c in LAYOUTS.values())
    raise DatasetNotFoundError(f"{root} matches no known data layout; expected {expected}")


def count_image_files(root: Path, split: str, limit: int | None = None) -> int:
    """How many image files a split holds (at most `limit`): an upper bound on its labelled
    samples, read from one folder listing, so a batch that cannot fit is refused before any
    label, image or checkpoint is read."""
    reader = resolve_layout(Path(root), "auto")(Path(root), split, "wide")
    n = len(list_images(reader.required_dirs()[0]))
    return n if limit is None else min(n, limit)
