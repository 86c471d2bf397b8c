"""Shared fixtures: a tiny YOLOP checkpoint with real BN statistics (random-init BN makes the
seg logits ~1e-8, where every pixel is a tie and parity would prove nothing), exported once per
session in the two graph layouts the tests inspect."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from compressor import build_model, save_checkpoint
from compressor.checkpoint import default_preprocess
from export.config import (
    CheckOptions,
    ExportConfig,
    Fp16Thresholds,
    HalfOptions,
    InputOptions,
    OnnxOptions,
    OutputOptions,
    TensorRTOptions,
)

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "fakes"))  # the TensorRT fake

IMGSZ = (64, 128)
# Random weights are far more FP16-sensitive than trained ones (measured on this model: masks
# 97-99 %, matched-box IoU 0.6-0.93); these bounds hold for it, the defaults are for real models.
RANDOM_MODEL_FP16 = Fp16Thresholds(
    min_mask_agreement_pct=95.0, min_mean_iou=0.5, max_score_delta=1.0
)


def calibrated_tiny_yolop() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model("yolop", width=0.25, depth=0.33)
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average: two passes give stable statistics
            m.reset_running_stats()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(4, 3, *IMGSZ, generator=g))
    return model.eval()


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "student.pt"
    save_checkpoint(path, calibrated_tiny_yolop(), preprocess=default_preprocess(IMGSZ))
    return path


SECTIONS = {
    "output": OutputOptions,
    "input": InputOptions,
    "onnx": OnnxOptions,
    "half": HalfOptions,
    "tensorrt": TensorRTOptions,
    "checks": CheckOptions,
}


def small_config(out: Path, **sections: dict) -> ExportConfig:
    """Batch up to 2, no progress bar, FP16 thresholds for a random model; `sections` override
    fields per section: small_config(out, tensorrt={"engine": "none"})."""
    base: dict[str, dict] = {
        "output": {"dir": str(out), "progress": False},
        "input": {"max_batch": 2},
        "tensorrt": {"timing_cache_dir": str(out.parent / "timing")},
        "checks": {"fp16": RANDOM_MODEL_FP16},
    }
    assert set(sections) <= set(SECTIONS), f"unknown sections {set(sections) - set(SECTIONS)}"
    return ExportConfig(
        **{n: cls(**{**base.get(n, {}), **sections.get(n, {})}) for n, cls in SECTIONS.items()}
    )


def synth_data(root: Path) -> Path:
    """A small synthetic set (6 train, 4 val, 256x144 frames: 16:9 like BDD100K) at `root`."""
    from compressor.data import SynthConfig, generate

    generate(
        SynthConfig(out=root, n_train=6, n_val=4, width=256, height=144, seed=0, workers=0),
        progress=False,
    )
    return root


def train_and_compress(data: Path, work: Path, arch=None, ratio: float = 0.3, **train_kw):
    """One epoch of teacher training, then prune (tci_gcp) + one distillation epoch. `arch`
    builds an unregistered architecture carrying its spec; else `train_kw["model"]` names a
    registered one."""
    from compressor.compress import CompressConfig, compress
    from compressor.latency.config import LatencyConfig
    from compressor.pruning import PruneConfig
    from compressor.train import TrainConfig, train

    small = dict(epochs=1, batch=2, workers=0, eval_every=1, progress=False)
    teacher = train(
        TrainConfig(data=str(data), out=str(work / "teacher"), **{**small, **train_kw}),
        model=arch() if arch else None,
    )
    res = compress(
        CompressConfig(
            teacher=str(teacher.last),
            data=str(data),
            out=str(work / "student"),
            prune=PruneConfig(ratio=ratio, importance="tci_gcp", calib_batches=2),
            latency=LatencyConfig(measure=False),
            epochs=1,
            batch=2,
            workers=0,
            progress=False,
        ),
        spec=arch().model_spec if arch else None,
        model=arch() if arch else None,
    )
    return teacher, res
