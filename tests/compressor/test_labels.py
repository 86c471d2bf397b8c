"""The label check (compressor.data.labels): boxes outside the image or degenerate are dropped and
counted, overlapping ones clipped, unknown category names counted by name (apart from the known
ignored classes), mask values outside the layout's classes refused by file name or mapped;
--strict-labels makes every counted problem an error; the counts reach the eval JSON."""

from __future__ import annotations

import json
import shutil
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compressor import build_model, save_checkpoint
from compressor.checkpoint import default_preprocess
from compressor.cli.evaluate import main as eval_main
from compressor.data import (
    BddDataset,
    DataConfig,
    LabelIssuesWarning,
    MaskValueError,
    StrictLabelError,
    make_loader,
)
from compressor.data.errors import DataConfigError
from compressor.data.labels import LabelTally, check_box, parse_mask_map
from compressor.train.evaluate import EvalConfig, evaluate

HW = (96, 160)
W, H = 320, 180  # the synth_dataset fixture's image size

pytestmark = pytest.mark.usefixtures("one_thread")


# --- the box rule ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "box, expected, kind",
    [
        ((10, 20, 30, 40), (10, 20, 30, 40), None),
        ((0, 0, W, H), (0, 0, W, H), None),  # the whole frame: not clipped
        ((-10, 20, 30, 200), (0, 20, 30, H), "clipped"),
        ((W + 1, 10, W + 50, 40), None, "outside"),
        ((-50, -50, -1, -1), None, "outside"),
        ((W, 10, W + 20, 40), None, "outside"),  # touches the edge only: zero area inside
        ((30, 20, 10, 40), None, "degenerate"),  # x2 < x1
        ((10, 40, 30, 20), None, "degenerate"),  # y2 < y1
        ((10, 20, 10, 40), None, "degenerate"),  # zero width
    ],
)
def test_check_box(box, expected, kind):
    tally = LabelTally()
    got = check_box(tuple(float(v) for v in box), (W, H), "f.json", tally)
    assert got == (None if expected is None else tuple(float(v) for v in expected))
    assert dict(tally.counts) == ({kind: 1} if kind else {})


def test_summary_line_names_counts_files_and_an_example():
    tally = LabelTally()
    for f in ("a.json", "b.json", "b.json"):
        tally.add("outside", f)
    for _ in range(5):
        tally.add("unknown", "c.json", "spaceship")
    assert tally.summary() == (
        "3 boxes outside the image in 2 files, 5 boxes of unknown class 'spaceship' in 1 file "
        "(e.g. a.json)"
    )
    assert LabelTally().summary() is None


# --- on a data set ---------------------------------------------------------------------------
def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _edit_objects(root: Path, split: str, stem: str, edit) -> Path:
    path = root / "det_annotations" / split / f"{stem}.json"
    data = json.loads(path.read_text())
    data["frames"][0]["objects"] = edit(data["frames"][0]["objects"])
    path.write_text(json.dumps(data))
    return path


def _box(category, x1, y1, x2, y2):
    return {"category": category, "box2d": {"x1": x1, "y1": y1, "x2": x2, "y2": y2}}


@pytest.fixture
def bad_labels(synth_dataset, tmp_path):
    """The val split with 3 boxes outside the image in 2 files, 1 reversed box, 1 box that
    needs clipping and 2 boxes of unknown class 'spaceship'."""
    root = _copy(synth_dataset, tmp_path / "bad")
    stems = sorted(p.stem for p in (root / "images" / "val").iterdir())
    a = _edit_objects(
        root,
        "val",
        stems[0],
        lambda o: [*o, _box("car", 400, 10, 450, 50), _box("car", -90, -90, -10, -10)],
    )
    _edit_objects(root, "val", stems[1], lambda o: [*o, _box("bus", 10, 190, 40, 230)])
    _edit_objects(
        root,
        "val",
        stems[2],
        lambda o: [
            *o,
            _box("truck", 50, 60, 20, 90),
            _box("car", 300, 100, 340, 150),
            _box("spaceship", 10, 10, 50, 50),
            _box("spaceship", 60, 10, 90, 50),
        ],
    )
    return root, a


def test_bad_labels_are_counted_in_one_warning(bad_labels):
    root, first = bad_labels
    with pytest.warns(LabelIssuesWarning) as rec:
        ds = BddDataset(root, "val", DataConfig(input_hw=HW))
    assert len(rec) == 1
    text = str(rec[0].message)
    assert "3 boxes outside the image in 2 files" in text
    assert "1 degenerate box (x2 < x1, y2 < y1 or zero area) in 1 file" in text
    assert "1 box clipped to the image in 1 file" in text
    assert "2 boxes of unknown class 'spaceship' in 1 file" in text
    assert f"e.g. {first}" in text and "\n" not in text
    d = ds.labels.to_dict()
    assert (d["clipped"], d["dropped_outside"], d["dropped_degenerate"]) == (1, 3, 1)
    assert d["unknown_classes"] == {"spaceship": 2} and d["files_with_problems"] == 3
    assert d["ignored_classes"]["person"] > 0 and "spaceship" not in d["ignored_classes"]
    boxes = np.concatenate([r.boxes for r in ds.records])
    assert boxes[:, [0, 2]].max() <= W and boxes[:, [1, 3]].max() <= H and boxes.min() >= 0
    assert [300.0, 100.0, 320.0, 150.0] in boxes.tolist()  # the clipped one


def test_strict_labels_refuses_naming_the_file(bad_labels):
    root, first = bad_labels
    with pytest.raises(StrictLabelError) as e:
        BddDataset(root, "val", DataConfig(input_hw=HW, strict_labels=True))
    msg = str(e.value)
    assert str(first) in msg and "3 boxes outside the image" in msg and "--strict-labels" in msg


def test_clean_data_needs_nothing_and_warns_nothing(synth_dataset):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = BddDataset(synth_dataset, "val", DataConfig(input_hw=HW, strict_labels=True))
    d = ds.labels.to_dict()
    assert d["clipped"] == d["dropped_outside"] == d["dropped_degenerate"] == 0
    assert d["unknown_classes"] == {} and d["boxes_kept"] == sum(len(r.boxes) for r in ds.records)


# --- masks -----------------------------------------------------------------------------------
def _rewrite_mask(root: Path, stem: str, fn) -> Path:
    path = root / "da_seg_annotations" / "val" / f"{stem}.png"
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert cv2.imwrite(str(path), fn(raw))
    return path


def test_mask_value_outside_the_classes_is_refused_by_name(synth_dataset, tmp_path):
    root = _copy(synth_dataset, tmp_path / "m")
    stem = sorted(p.stem for p in (root / "images" / "val").iterdir())[0]
    path = _rewrite_mask(root, stem, lambda m: np.where(m > 0, 7, 0).astype(np.uint8))
    ds = BddDataset(root, "val", DataConfig(input_hw=HW))
    with pytest.raises(MaskValueError) as e:
        ds[0]
    msg = str(e.value)
    assert str(path) in msg and "value(s) 7" in msg and "{0, 1} or {0, 255}" in msg
    assert "--mask-map drivable:7=1" in msg
    # the explicit mapping reads 7 as drivable: the same mask as the original 0/255 file
    clean = BddDataset(synth_dataset, "val", DataConfig(input_hw=HW)).load_raw(0)[1]
    mapped = BddDataset(root, "val", DataConfig(input_hw=HW, mask_map=("drivable:7=1",)))
    assert np.array_equal(mapped.load_raw(0)[1], clean) and clean.any()


def test_mask_map_is_validated():
    assert parse_mask_map(["lane:1-254=1", "drivable:7=0"]) == (
        ("lane", 1, 254, 1),
        ("drivable", 7, 7, 0),
    )
    for bad in ("drivable:7", "road:7=1", "lane:9-3=1", "lane:7=2"):
        with pytest.raises(DataConfigError, match="mask_map"):
            DataConfig(mask_map=(bad,))


# --- evaluation: the unknown-class example, and the JSON block -------------------------------
class Oracle(nn.Module):
    """Predicts the given (clean) batches' ground truth exactly."""

    def __init__(self, batches):
        super().__init__()
        self.batches, self.i = batches, 0
        self.anchor = nn.Parameter(torch.zeros(1))

    def forward(self, images):
        b = self.batches[self.i]
        self.i += 1
        out = {
            t: (F.one_hot(b[t], 2).permute(0, 3, 1, 2).float() - 0.5) * 20
            for t in ("drivable", "lane")
        }
        det = torch.zeros(images.shape[0], 16, 6)
        for k, (i, _, cx, cy, w, h) in enumerate(b["targets"].tolist()):
            det[int(i), k % 16] = torch.tensor([cx, cy, w, h, 1.0, 1.0])
        out["det"] = det
        return out


def test_unknown_class_is_reported_not_silently_scored(synth_dataset, tmp_path):
    """One file's vehicles renamed 'spaceship': its boxes leave the ground truth (as before),
    but now with a warning and counts; the score of clean data is untouched."""
    root = _copy(synth_dataset, tmp_path / "u")
    stems = sorted(p.stem for p in (root / "images" / "val").iterdir())
    renamed = _edit_objects(
        root,
        "val",
        stems[2],
        lambda o: [
            {**x, "category": "spaceship"} if x["category"] in ("car", "truck", "bus") else x
            for x in o
        ],
    )
    cfg = DataConfig(input_hw=HW, lane_labels="thin")
    clean = list(make_loader(BddDataset(synth_dataset, "val", cfg), 4, shuffle=False))
    ecfg = EvalConfig(progress=False)
    ok = evaluate(Oracle(clean), make_loader(BddDataset(synth_dataset, "val", cfg), 4, False), ecfg)
    with pytest.warns(LabelIssuesWarning, match=r"8 boxes of unknown class 'spaceship' in 1 file"):
        bad_ds = BddDataset(root, "val", cfg)
    bad = evaluate(Oracle(clean), make_loader(bad_ds, 4, shuffle=False), ecfg)
    assert ok["summary"]["det_map50"] == pytest.approx(1.0)
    assert bad["summary"]["det_map50"] < 0.9  # the dropped boxes' detections are false positives
    assert bad_ds.labels.to_dict()["unknown_classes"] == {"spaceship": 8}
    with pytest.raises(StrictLabelError, match=str(renamed)):
        BddDataset(root, "val", DataConfig(input_hw=HW, strict_labels=True))


def _to_stderr(message, category, filename, lineno, file=None, line=None):
    """What Python prints a warning with, through the formatter the CLI installed."""
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def _ckpt(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    ckpt = tmp_path / "m.pt"
    save_checkpoint(
        ckpt, build_model("yolop", width=0.25, depth=0.33), preprocess=default_preprocess(HW)
    )
    return ckpt


def test_mtc_eval_json_has_the_label_counts_and_strict_is_one_line(bad_labels, tmp_path, capsys):
    root, first = bad_labels
    ckpt, out = _ckpt(tmp_path), tmp_path / "r.json"
    base = [str(ckpt), "--data", str(root), "--batch", "4", "--workers", "0", "--no-progress"]
    with warnings.catch_warnings():  # print warnings as the command line does (not pytest's)
        warnings.simplefilter("default")
        warnings.showwarning = _to_stderr
        assert eval_main([*base, "--out", str(out)]) == 0
    labels = json.loads(out.read_text())["labels"]
    assert labels["dropped_outside"] == 3 and labels["unknown_classes"] == {"spaceship": 2}
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "outside the image" in ln]
    assert len(lines) == 1 and lines[0].startswith("warning: labels of ")
    strict_out = tmp_path / "s.json"
    assert eval_main([*base, "--strict-labels", "--out", str(strict_out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and str(first) in err
    assert not strict_out.exists()


def test_mtc_eval_refuses_a_bad_mask_in_one_line(synth_dataset, tmp_path, capsys):
    root = _copy(synth_dataset, tmp_path / "m")
    stem = sorted(p.stem for p in (root / "images" / "val").iterdir())[1]
    path = _rewrite_mask(root, stem, lambda m: np.where(m > 0, 7, 0).astype(np.uint8))
    ckpt = _ckpt(tmp_path)
    base = [str(ckpt), "--data", str(root), "--batch", "4", "--workers", "0", "--no-progress"]
    assert eval_main([*base, "--out", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and str(path) in err
    assert eval_main([*base, "--mask-map", "drivable:7=1", "--out", str(tmp_path / "r.json")]) == 0
