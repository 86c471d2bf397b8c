"""Synthetic generator: exact YOLOP layout, label schema, determinism, config and CLI errors."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from compressor.cli.synth import main as synth_main
from compressor.data.errors import DataConfigError, OutputDirError
from compressor.data.synth import FOLDERS, MANIFEST, SynthConfig, generate, image_name
from runtime.spec import VEHICLE_CATEGORIES

# The `synth_dataset` fixture (conftest.py): 6 train + 4 val images at 320x180.
SYNTH_TRAIN, SYNTH_VAL, SYNTH_W, SYNTH_H = 6, 4, 320, 180
DROPPED = {"traffic sign", "traffic light", "person", "rider", "bike", "motor"}


def _files(root: Path) -> dict[str, bytes]:
    """Every generated file (not the manifest: it records the worker count) by relative path."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


def _tiny(root: Path, **kw) -> SynthConfig:
    base = dict(out=root, n_train=3, n_val=2, width=160, height=96, seed=7, workers=0)
    base.update(kw)
    return SynthConfig(**base)


def test_layout_is_exactly_yolops(synth_dataset: Path):
    for split, n in (("train", SYNTH_TRAIN), ("val", SYNTH_VAL)):
        stems = {p.stem for p in (synth_dataset / "images" / split).iterdir()}
        assert len(stems) == n
        expected = {
            "images": ".jpg",
            "det_annotations": ".json",
            "da_seg_annotations": ".png",
            "ll_seg_annotations": ".png",
            "ll_seg_annotations_thin": ".png",
        }
        for top, ext in expected.items():
            files = sorted((synth_dataset / top / split).iterdir())
            assert {p.suffix for p in files} == {ext}, top
            assert {p.stem for p in files} == stems, top
    tops = {p.name for p in synth_dataset.iterdir()}
    assert tops == set(FOLDERS.values()) | {MANIFEST}


def test_images_and_masks_have_the_configured_size_and_values(synth_dataset: Path):
    for img_path in (synth_dataset / "images" / "train").iterdir():
        img = cv2.imread(str(img_path))
        assert img.shape == (SYNTH_H, SYNTH_W, 3)
        for top in ("da_seg_annotations", "ll_seg_annotations", "ll_seg_annotations_thin"):
            m = cv2.imread(str(synth_dataset / top / "train" / f"{img_path.stem}.png"), -1)
            assert m.shape == (SYNTH_H, SYNTH_W) and m.dtype == np.uint8
            assert set(np.unique(m)) <= {0, 255}
        wide = cv2.imread(
            str(synth_dataset / "ll_seg_annotations/train" / f"{img_path.stem}.png"), -1
        )
        thin = cv2.imread(
            str(synth_dataset / "ll_seg_annotations_thin/train" / f"{img_path.stem}.png"), -1
        )
        # The thin lines run inside the wide ones and cover clearly fewer pixels.
        assert np.all(wide[thin > 0] > 0)
        assert 0 < (thin > 0).sum() < 0.6 * (wide > 0).sum()


def test_label_json_follows_the_bdd_per_image_schema(synth_dataset: Path):
    categories: set[str] = set()
    for path in (synth_dataset / "det_annotations" / "train").iterdir():
        label = json.loads(path.read_text())
        assert label["name"] == path.stem
        assert set(label["attributes"]) == {"weather", "scene", "timeofday"}
        (frame,) = label["frames"]
        assert frame["timestamp"] == 10000
        for obj in frame["objects"]:
            assert {"category", "id", "attributes"} <= set(obj)
            if "box2d" in obj:
                b = obj["box2d"]
                assert 0 <= b["x1"] < b["x2"] <= SYNTH_W and 0 <= b["y1"] < b["y2"] <= SYNTH_H
                assert {"occluded", "truncated"} <= set(obj["attributes"])
                categories.add(obj["category"])
            else:
                assert obj["category"].startswith(("lane/", "area/")) and obj["poly2d"]
    assert categories & VEHICLE_CATEGORIES and categories & DROPPED


def test_manifest_counts_match_the_files(synth_dataset: Path):
    manifest = json.loads((synth_dataset / MANIFEST).read_text())
    assert manifest["counts"] == {"train": SYNTH_TRAIN, "val": SYNTH_VAL}
    assert manifest["config"]["width"] == SYNTH_W and manifest["layout"] == "yolop"
    counted: dict[str, int] = {}
    for path in (synth_dataset / "det_annotations" / "val").iterdir():
        for obj in json.loads(path.read_text())["frames"][0]["objects"]:
            if "box2d" in obj:
                counted[obj["category"]] = counted.get(obj["category"], 0) + 1
    assert manifest["objects"]["val"] == counted


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path):
    generate(_tiny(tmp_path / "a"), progress=False)
    generate(_tiny(tmp_path / "b"), progress=False)
    generate(_tiny(tmp_path / "c", seed=8), progress=False)
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert a == b and len(a) == 5 * 5
    assert set(a) != set(c)  # names derive from the seed
    assert sorted(a.values()) != sorted(c.values())


def test_output_does_not_depend_on_worker_count(tmp_path: Path):
    generate(_tiny(tmp_path / "w0", workers=0), progress=False)
    generate(_tiny(tmp_path / "w2", workers=2), progress=False)
    assert _files(tmp_path / "w0") == _files(tmp_path / "w2")


def test_image_names_are_unique_per_split_and_index():
    names = {image_name(0, s, i) for s in ("train", "val") for i in range(500)}
    assert len(names) == 1000


def test_existing_dataset_needs_overwrite(tmp_path: Path):
    cfg = _tiny(tmp_path, n_train=1, n_val=0)
    generate(cfg, progress=False)
    with pytest.raises(OutputDirError, match="--overwrite"):
        generate(cfg, progress=False)
    generate(_tiny(tmp_path, n_train=2, n_val=0, overwrite=True), progress=False)
    assert len(list((tmp_path / "images" / "train").iterdir())) == 2  # old files removed


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"n_train": -1}, "n_train=-1"),
        ({"n_train": 0, "n_val": 0}, "nothing to generate"),
        ({"width": 0}, "0x96"),
        ({"jpeg_quality": 101}, "jpeg_quality"),
        ({"lane_width_thin": 0}, "thin=0"),
    ],
)
def test_bad_config_is_named(tmp_path: Path, kw: dict, needle: str):
    with pytest.raises(DataConfigError, match=needle):
        _tiny(tmp_path, **kw)


def test_cli_writes_a_dataset_and_json_report(tmp_path: Path, capsys):
    out = tmp_path / "cli"
    rc = synth_main(
        [
            "--out",
            str(out),
            "--n-train",
            "2",
            "--n-val",
            "1",
            "--width",
            "128",
            "--height",
            "72",
            "--workers",
            "0",
            "--json",
            "--no-progress",
        ]
    )
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["counts"] == {"train": 2, "val": 1}
    assert len(list((out / "images" / "val").iterdir())) == 1


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--n-train", "-5"], "n_train=-5"),
        (["--width", "0"], "image size"),
        (["--height", "x"], "--height"),
        (["--out-is-file"], "is a file"),
    ],
)
def test_cli_user_mistakes_are_one_line_exit_2(tmp_path: Path, capsys, args: list, needle: str):
    out = tmp_path / "o"
    if args == ["--out-is-file"]:
        out.write_text("not a folder")
        args = []
    with pytest.raises(SystemExit) as exc_info:
        raise SystemExit(synth_main(["--out", str(out), "--workers", "0", "--no-progress", *args]))
    assert exc_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and needle in err
