"""Loader: both BDD100K layouts give the same samples, class merge, letterbox alignment, batch
contract (docs/CONTRACTS.md)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from compressor.data import BddDataset, DataConfig, collate, make_loader
from compressor.data.errors import DataConfigError
from runtime.geometry import Letterbox
from runtime.spec import IMAGENET_MEAN, IMAGENET_STD, VEHICLE_CATEGORIES

HW = (192, 320)


def to_bdd100k(src: Path, dst: Path) -> None:
    """Re-lay a generated YOLOP-layout set as the official BDD100K release: one det JSON list
    per split, drivable masks 0 direct / 1 alternative / 2 background, lane masks 255 background."""
    for split in ("train", "val"):
        img_dir = dst / "images/100k" / split
        da_dir, ll_dir = dst / "labels/drivable/masks" / split, dst / "labels/lane/masks" / split
        for d in (img_dir, da_dir, ll_dir, dst / "labels/det_20"):
            d.mkdir(parents=True, exist_ok=True)
        frames = []
        for img in sorted((src / "images" / split).iterdir()):
            shutil.copy(img, img_dir / img.name)
            label = json.loads((src / "det_annotations" / split / f"{img.stem}.json").read_text())
            boxes = [o for o in label["frames"][0]["objects"] if "box2d" in o]
            frames.append({"name": img.name, "attributes": label["attributes"], "labels": boxes})
            da = cv2.imread(str(src / "da_seg_annotations" / split / f"{img.stem}.png"), -1)
            official = np.full(da.shape, 2, np.uint8)
            official[da > 0] = 0
            official[(da > 0) & (np.arange(da.shape[1]) % 2 == 0)] = 1  # some "alternative"
            cv2.imwrite(str(da_dir / f"{img.stem}.png"), official)
            ll = cv2.imread(str(src / "ll_seg_annotations" / split / f"{img.stem}.png"), -1)
            cv2.imwrite(str(ll_dir / f"{img.stem}.png"), np.where(ll > 0, 3, 255).astype(np.uint8))
        (dst / "labels/det_20" / f"det_{split}.json").write_text(json.dumps(frames))


@pytest.fixture(scope="module")
def bdd100k_copy(synth_dataset: Path, tmp_path_factory) -> Path:
    dst = tmp_path_factory.mktemp("bdd100k")
    to_bdd100k(synth_dataset, dst)
    return dst


def test_both_layouts_load_the_same_samples(synth_dataset: Path, bdd100k_copy: Path):
    cfg = DataConfig(input_hw=HW)
    a, b = BddDataset(synth_dataset, "val", cfg), BddDataset(bdd100k_copy, "val", cfg)
    assert (a.layout, b.layout) == ("yolop", "bdd100k")
    assert len(a) == len(b) == 4
    for i in range(len(a)):
        sa, sb = a[i], b[i]
        np.testing.assert_array_equal(sa["meta"]["boxes"], sb["meta"]["boxes"])
        np.testing.assert_array_equal(sa["drivable"], sb["drivable"])
        np.testing.assert_array_equal(sa["lane"], sb["lane"])
        np.testing.assert_array_equal(sa["image"], sb["image"])
    assert sum(a[i]["drivable"].sum() for i in range(len(a))) > 0


def test_class_merge_keeps_only_vehicles(synth_dataset: Path):
    ds = BddDataset(synth_dataset, "train", DataConfig(input_hw=HW))
    n_dropped_seen = 0
    for rec in ds.records:
        label = json.loads(
            (synth_dataset / "det_annotations/train" / f"{rec.name}.json").read_text()
        )
        objs = [o for o in label["frames"][0]["objects"] if "box2d" in o]
        vehicles = [o["box2d"] for o in objs if o["category"] in VEHICLE_CATEGORIES]
        n_dropped_seen += sum(o["category"] == "person" for o in objs)
        expected = np.array([[v["x1"], v["y1"], v["x2"], v["y2"]] for v in vehicles]).reshape(-1, 4)
        np.testing.assert_array_equal(rec.boxes, expected)
        assert rec.classes.tolist() == [0] * len(vehicles)
    assert n_dropped_seen > 0  # the set does contain persons, and they were dropped


def test_batch_matches_the_contract(synth_dataset: Path):
    ds = BddDataset(synth_dataset, "train", DataConfig(input_hw=HW))
    batch = next(iter(make_loader(ds, batch_size=3, shuffle=False)))
    assert batch["images"].shape == (3, 3, *HW) and batch["images"].dtype == torch.float32
    assert batch["drivable"].shape == (3, *HW) and batch["drivable"].dtype == torch.int64
    assert batch["lane"].dtype == torch.int64
    assert set(torch.unique(batch["lane"]).tolist()) <= {0, 1}
    t = batch["targets"]
    assert t.ndim == 2 and t.shape[1] == 6 and t.dtype == torch.float32
    n_boxes = [len(m["boxes"]) for m in batch["meta"]]
    assert t.shape[0] == sum(n_boxes)
    assert torch.bincount(t[:, 0].long(), minlength=3).tolist() == n_boxes
    meta = batch["meta"][0]
    assert isinstance(meta["letterbox"], Letterbox) and Path(meta["path"]).is_file()
    lb = meta["letterbox"]
    # Letterbox padding rows: grey 114 in the image, background in the masks.
    pad = (114 / 255 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(batch["images"][0, :, 0, 0].numpy(), pad, atol=1e-5)
    assert batch["drivable"][:, : lb.pad_top].sum() == 0


def test_targets_are_letterboxed_centre_size(synth_dataset: Path):
    ds = BddDataset(synth_dataset, "train", DataConfig(input_hw=(384, 640)))
    item = next(i for i in range(len(ds)) if len(ds.records[i].boxes))
    batch = collate([ds[item]])
    lb = batch["meta"][0]["letterbox"]
    assert (lb.scale, lb.pad_top, lb.pad_left) == (2.0, 12, 0)  # 320x180 -> 640x360 + 12 rows
    x1, y1, x2, y2 = batch["meta"][0]["boxes"][0]
    expected = [0, 0, (x1 + x2), (y1 + y2) + 12, 2 * (x2 - x1), 2 * (y2 - y1)]
    np.testing.assert_allclose(batch["targets"][0].numpy(), expected, atol=1e-4)


def test_letterboxed_box_lands_on_the_rectangle_pixels(tiny_yolop_factory):
    """A solid red rectangle whose box and drivable mask are known: after letterboxing to half
    size, the target box covers exactly the red pixels of the normalised tensor."""
    root = tiny_yolop_factory(rect=(60, 30, 100, 70), size=(100, 200))
    ds = BddDataset(root, "train", DataConfig(input_hw=(64, 100)))
    batch = collate([ds[0]])
    _, _, cx, cy, w, h = batch["targets"][0].tolist()
    x1, y1, x2, y2 = (round(v) for v in (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
    assert (x1, y1, x2, y2) == (30, 22, 50, 42)  # scale 0.5, 7 rows of padding on top
    red = (1.0 - IMAGENET_MEAN[0]) / IMAGENET_STD[0]
    is_red = (batch["images"][0, 0] - red).abs() < 1e-4
    ys, xs = torch.nonzero(is_red, as_tuple=True)
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x1, y1, x2, y2)
    assert is_red.sum() == (x2 - x1) * (y2 - y1)
    assert torch.equal(batch["drivable"][0].bool(), is_red)


def test_thin_lane_labels_and_max_images(synth_dataset: Path):
    wide = BddDataset(synth_dataset, "train", DataConfig(input_hw=HW, max_images=2))
    thin = BddDataset(synth_dataset, "train", DataConfig(input_hw=HW, lane_labels="thin"))
    assert len(wide) == 2 and len(thin) == 6
    assert thin[0]["lane"].sum() < wide[0]["lane"].sum()


def test_forced_layout_and_unknown_layout(synth_dataset: Path):
    assert BddDataset(synth_dataset, "val", DataConfig(layout="yolop")).layout == "yolop"
    with pytest.raises(DataConfigError, match=r"unknown data layout 'yolo'.*did you mean 'yolop'"):
        BddDataset(synth_dataset, "val", DataConfig(layout="yolo"))


def test_loader_order_is_seeded_and_sampler_excludes_shuffle(synth_dataset: Path):
    ds = BddDataset(synth_dataset, "train", DataConfig(input_hw=HW))

    def order(seed: int) -> list[str]:
        loader = make_loader(ds, batch_size=6, shuffle=True, seed=seed)
        return [m["path"] for m in next(iter(loader))["meta"]]

    assert order(1) == order(1) and sorted(order(1)) == sorted(order(2))
    sampler = torch.utils.data.SequentialSampler(ds)
    with pytest.raises(DataConfigError, match="shuffle"):
        make_loader(ds, 2, shuffle=True, sampler=sampler)
    assert len(make_loader(ds, 4, shuffle=False, sampler=sampler, drop_last=True)) == 1


def test_worker_processes_give_the_same_augmented_batches(synth_dataset: Path):
    """Augmentation is seeded per (seed, epoch, index), not per worker; loading in worker
    processes also proves OpenCV does not deadlock after fork."""
    ds = BddDataset(synth_dataset, "train", DataConfig(input_hw=(96, 160), augment=True))
    in_process = list(make_loader(ds, batch_size=3, shuffle=True, workers=0, seed=4))
    in_workers = list(make_loader(ds, batch_size=3, shuffle=True, workers=2, seed=4))
    assert len(in_process) == len(in_workers) == 2
    for a, b in zip(in_process, in_workers):
        assert torch.equal(a["images"], b["images"]) and torch.equal(a["targets"], b["targets"])
        assert torch.equal(a["lane"], b["lane"])
