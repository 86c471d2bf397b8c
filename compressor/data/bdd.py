"""BDD100K (either layout) as a torch Dataset yielding letterboxed samples, and the collate
function that produces the batch every trainer, loss and metric in the project consumes."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

# Importing the layout modules registers them.
from compressor.data import layout_bdd100k, layout_yolop  # noqa: F401
from compressor.data.augment import augment_sample
from compressor.data.config import DataConfig
from compressor.data.errors import (
    BadImagesWarning,
    DataConfigError,
    EmptyDatasetError,
    ImageReadError,
    LabelError,
    MaskSizeError,
    UnlabeledImagesWarning,
)
from compressor.data.labels import (
    LabelIssuesWarning,
    apply_mask_map,
    check_mask,
    report_tally,
)
from compressor.data.layouts import LayoutReader, SampleRecord, resolve_layout
from runtime.boxes import xyxy_to_xywh
from runtime.cli_kernel import one_line
from runtime.errors import MtcError
from runtime.geometry import (
    boxes_to_letterbox,
    letterbox_image,
    letterbox_mask,
    letterbox_params,
    stretch_params,
)
from runtime.image_read import ImageDecodeError, file_truncation, read_image
from runtime.spec import IMAGENET_MEAN, IMAGENET_STD


def _read(path: Path, flags: int, what: str) -> np.ndarray:
    """Decode with the truncation check (a cut-off JPEG/PNG is an error, not a grey image)."""
    try:
        return read_image(path, flags)
    except ImageDecodeError as e:
        raise ImageReadError(f"{what} {e}") from None


def read_image_rgb(path: Path) -> np.ndarray:
    img = _read(path, cv2.IMREAD_COLOR, "image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_mask(path: Path, image_hw: tuple[int, int]) -> np.ndarray:
    """Raw mask values as one 2-D array (colour masks reduced by max over channels)."""
    raw = _read(path, cv2.IMREAD_UNCHANGED, "mask")
    if raw.ndim == 3:
        raw = raw.max(axis=2)
    if raw.shape[:2] != tuple(image_hw):
        raise MaskSizeError(
            f"{path}: mask is {raw.shape[1]}x{raw.shape[0]} but its image is "
            f"{image_hw[1]}x{image_hw[0]} (WxH); masks must match their image's size"
        )
    return raw


class BddDataset(Dataset):
    """Letterboxed samples of one split. Layout is detected (or forced by `cfg.layout`).

    Augmentation draws from a Generator seeded by (cfg.seed, epoch, index), so a sample's
    augmentation does not depend on which worker loads it; call `set_epoch` each epoch.
    """

    def __init__(self, root: str | Path, split: str, cfg: DataConfig | None = None) -> None:
        self.cfg = cfg or DataConfig()
        self.root = Path(root)
        self.split = split
        reader_cls = resolve_layout(self.root, self.cfg.layout)
        self.reader: LayoutReader = reader_cls(self.root, split, self.cfg.lane_labels)
        self.layout = reader_cls.name
        records, unlabeled = self.reader.scan(self.cfg.max_images)
        self.skipped = len(unlabeled)
        if unlabeled and not self.cfg.skip_unlabeled:
            first = unlabeled[0]
            raise LabelError(
                f"{first.image}: {first.reason} ({len(unlabeled)} unlabeled image(s) in split "
                f"{split!r}); add the labels or keep skip_unlabeled=True to skip them"
            )
        if unlabeled:
            first = unlabeled[0]
            warnings.warn(
                f"skipped {len(unlabeled)} unlabeled image(s) in {self.root} split {split!r}, "
                f"e.g. {first.image.name}: {first.reason}",
                UnlabeledImagesWarning,
                stacklevel=2,
            )
        if not records:
            raise EmptyDatasetError(
                f"{self.root} split {split!r} ({self.layout} layout) has no labelled image "
                f"({self.skipped} skipped as unlabeled); expected {self.reader.tree}"
            )
        self.labels = self.reader.tally
        summary = report_tally(
            self.labels, f"{self.root} split {split!r}", strict=self.cfg.strict_labels
        )
        if summary is not None:
            warnings.warn(
                f"labels of {self.root} split {split!r}: {summary}; those boxes were clipped or "
                f"left out (--strict-labels makes this an error)",
                LabelIssuesWarning,
                stacklevel=2,
            )
        self.bad_files = 0
        if self.cfg.skip_bad_images:
            records = self._without_bad_files(records)
        self.records: list[SampleRecord] = records
        self.epoch = 0

    def _without_bad_files(self, records: list[SampleRecord]) -> list[SampleRecord]:
        """skip_bad_images: drop samples with a truncated or unreadable image or mask (checked
        from each file's end marker, before training), naming the first and counting them."""
        kept, bad = [], []
        for rec in records:
            why = next(
                (
                    f"{p}: {w}"
                    for p in (rec.image, rec.drivable, rec.lane)
                    if (w := file_truncation(p)) is not None
                ),
                None,
            )
            (bad if why else kept).append(why or rec)
        self.bad_files = len(bad)
        if bad:
            warnings.warn(
                f"skipped {len(bad)} sample(s) with a truncated or unreadable file in {self.root} "
                f"split {self.split!r}, e.g. {bad[0]}",
                BadImagesWarning,
                stacklevel=3,
            )
        return kept  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def load_raw(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Original-resolution RGB image and {0,1} drivable and lane masks."""
        rec = self.records[index]
        image = read_image_rgb(rec.image)
        hw = image.shape[:2]
        drivable = self._mask(rec.drivable, hw, "drivable", self.reader.decode_drivable)
        lane = self._mask(rec.lane, hw, "lane", self.reader.decode_lane)
        return image, drivable, lane

    def _mask(self, path: Path, hw: tuple[int, int], task: str, decode: Any) -> np.ndarray:
        """Read, check the values against the layout's classes (or the mask_map), decode."""
        raw = read_mask(path, hw)
        declared = self.reader.mask_values.get(task, ())
        checked, used = check_mask(raw, task, declared, path, self.layout, self.cfg.mask_map)
        return apply_mask_map(decode(checked), raw, used) if used else decode(raw)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rec = self.records[index]
        image, drivable, lane = self.load_raw(index)
        fit = letterbox_params if self.cfg.letterbox else stretch_params
        lb = fit(image.shape[:2], self.cfg.input_hw)
        image = letterbox_image(image, lb)
        masks = (letterbox_mask(drivable, lb), letterbox_mask(lane, lb))
        boxes = boxes_to_letterbox(rec.boxes, lb)
        classes = rec.classes.copy()
        if self.cfg.augment:
            rng = np.random.default_rng([self.cfg.seed, self.epoch, index])
            image, boxes, classes, masks = augment_sample(
                image, boxes, classes, masks, self.cfg.augment_config, rng
            )
        return {
            "image": image if self.cfg.color == "RGB" else image[..., ::-1],
            "boxes": boxes.astype(np.float32).reshape(-1, 4),
            "classes": classes.astype(np.int64),
            "drivable": masks[0],
            "lane": masks[1],
            "meta": {
                "path": str(rec.image),
                "letterbox": lb,
                "boxes": rec.boxes.copy(),
                "classes": rec.classes.copy(),
            },
        }


def normalize_images(
    images_u8: np.ndarray,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """uint8 [B,H,W,3] -> float32 [B,3,H,W] as (x / 255 - mean) / std (ImageNet's by default)."""
    x = torch.from_numpy(np.ascontiguousarray(images_u8)).permute(0, 3, 1, 2).float()
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return ((x / 255.0 - m) / s).contiguous()


def collate(
    items: list[dict[str, Any]],
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> dict[str, Any]:
    """Samples -> the batch of docs/CONTRACTS.md (targets: img_idx, cls, cx, cy, w, h in
    letterboxed input pixels); images normalised with the data config's mean/std."""
    rows = []
    for i, it in enumerate(items):
        if len(it["boxes"]):
            xywh = xyxy_to_xywh(it["boxes"].astype(np.float32))
            idx = np.full((len(xywh), 1), i, dtype=np.float32)
            cls = it["classes"].astype(np.float32)[:, None]
            rows.append(np.concatenate([idx, cls, xywh], axis=1))
    targets = np.concatenate(rows, 0) if rows else np.zeros((0, 6), np.float32)
    return {
        "images": normalize_images(np.stack([it["image"] for it in items]), mean, std),
        "targets": torch.from_numpy(targets.astype(np.float32)),
        "drivable": torch.from_numpy(np.stack([it["drivable"] for it in items]).astype(np.int64)),
        "lane": torch.from_numpy(np.stack([it["lane"] for it in items]).astype(np.int64)),
        "meta": [it["meta"] for it in items],
    }


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    workers: int = 0,
    sampler: Sampler | None = None,
    drop_last: bool = False,
    seed: int = 0,
) -> DataLoader:
    """DataLoader with `collate`; shuffling order comes from a Generator seeded with `seed`.
    With a sampler (e.g. DistributedSampler) the sampler shuffles, so `shuffle` must be False.

    No worker_init_fn touches OpenCV: calling cv2.setNumThreads in a forked worker can deadlock
    on the thread pool inherited from the parent."""
    if batch_size <= 0:
        raise DataConfigError(f"batch_size must be positive, got {batch_size}")
    if sampler is not None and shuffle:
        raise DataConfigError(
            "make_loader got shuffle=True and a sampler; pass shuffle to the sampler "
            "(e.g. DistributedSampler(ds, shuffle=True)) and shuffle=False here"
        )
    cfg = _data_config(dataset)
    return _NamedErrorLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        sampler=sampler,
        num_workers=workers,
        collate_fn=functools.partial(collate, mean=cfg.mean, std=cfg.std),
        drop_last=drop_last,
        generator=torch.Generator().manual_seed(seed),
    )


def _data_config(dataset: Dataset) -> DataConfig:
    """The DataConfig behind a dataset (through Subset and friends); the default otherwise."""
    ds: Any = dataset
    while not hasattr(ds, "cfg") and hasattr(ds, "dataset"):
        ds = ds.dataset
    cfg = getattr(ds, "cfg", None)
    return cfg if isinstance(cfg, DataConfig) else DataConfig()


class _NamedErrorLoader(DataLoader):
    """A DataLoader whose worker errors reach the caller as the worker raised them: torch
    re-raises an error from a worker process with the worker's whole traceback as its message;
    an MtcError (a bad image, a label) is re-raised here with its own one-line message."""

    def __iter__(self) -> Any:
        return _reraise_named(super().__iter__())


def _reraise_named(it: Any) -> Any:
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except MtcError as e:
            text = str(e)
            if "Original Traceback" not in text:
                raise
            raise type(e)(one_line(text)) from None
        yield batch
