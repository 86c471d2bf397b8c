"""Shared fixtures: a tiny generated data set in YOLOP's BDD100K layout, torch on one thread."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from compressor.data.synth import SynthConfig, generate

SYNTH_TRAIN, SYNTH_VAL = 6, 4
SYNTH_W, SYNTH_H = 320, 180


@pytest.fixture
def one_thread():
    """torch on one intra-op thread for the test: on a shared 2-core machine two OpenMP threads
    can run many times slower. The model-running test modules use it through `pytestmark`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def synth_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root of a generated data set: 6 train + 4 val images at 320x180, seed 0 (read-only: do
    not write into it; copy it if a test needs to change files)."""
    root = tmp_path_factory.mktemp("synth") / "bdd"
    cfg = SynthConfig(
        out=root,
        n_train=SYNTH_TRAIN,
        n_val=SYNTH_VAL,
        width=SYNTH_W,
        height=SYNTH_H,
        seed=0,
        workers=0,
    )
    generate(cfg, progress=False)
    return root


@pytest.fixture
def tiny_yolop_factory(tmp_path: Path):
    """Make a one-image YOLOP-layout set by hand: grey image with a solid red rectangle that is
    both the only `car` box and the drivable mask; lane mask = the rectangle's left column.
    The image is a PNG (lossless, so pixel values are exact)."""

    def make(rect=(60, 30, 100, 70), size=(100, 200), split="train", name="img0") -> Path:
        import cv2
        import numpy as np

        root = tmp_path / f"tiny_{name}"
        x1, y1, x2, y2 = rect
        img = np.full((*size, 3), 100, np.uint8)
        img[y1:y2, x1:x2] = (0, 0, 255)  # BGR red
        mask = np.zeros(size, np.uint8)
        mask[y1:y2, x1:x2] = 255
        lane = np.zeros(size, np.uint8)
        lane[:, x1] = 255
        objects = [
            {"category": "car", "id": 0, "box2d": {"x1": x1, "y1": y1, "x2": x2, "y2": y2}},
            {"category": "person", "id": 1, "box2d": {"x1": 0, "y1": 0, "x2": 5, "y2": 9}},
        ]
        label = {"name": name, "frames": [{"timestamp": 10000, "objects": objects}]}
        files = {"images": img, "da_seg_annotations": mask, "ll_seg_annotations": lane}
        for top, arr in files.items():
            (root / top / split).mkdir(parents=True)
            if not cv2.imwrite(str(root / top / split / f"{name}.png"), arr):
                raise OSError(f"could not write {root / top}")
        (root / "det_annotations" / split).mkdir(parents=True)
        (root / "det_annotations" / split / f"{name}.json").write_text(json.dumps(label))
        return root

    return make
