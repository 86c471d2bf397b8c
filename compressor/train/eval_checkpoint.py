"""Evaluate a checkpoint on a data split: what `mtc-eval` and the demo call."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from compressor.checkpoint import load_checkpoint
from compressor.data import BddDataset, DataConfig, make_loader
from compressor.data.labels import checked_mask_map
from compressor.models.registry import spec_of
from compressor.models.spec import ModelSpecError
from compressor.train.ddp import resolve_device
from compressor.train.evaluate import EvalConfig, EvalConfigError, evaluate
from compressor.train.report import eval_markdown, write_json
from runtime.fileio import atomic_write_text


@dataclass(frozen=True)
class EvalJob:
    """Which checkpoint on which data. `imgsz` None = the checkpoint's own input size."""

    checkpoint: str
    data: str
    split: str = "val"
    imgsz: tuple[int, int] | None = None
    batch: int = 8
    lane_labels: str = "thin"
    max_images: int | None = None
    workers: int = 2
    device: str = "auto"
    skip_bad_images: bool = False
    strict_labels: bool = False  # label problems are errors (compressor.data.labels)
    mask_map: tuple[str, ...] = ()  # e.g. ("drivable:7=1",): DataConfig.mask_map
    eval: EvalConfig = field(default_factory=EvalConfig)
    # An artifact (.onnx / .engine) runs on a runtime backend instead of `device`.
    backend: str = "auto"
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.batch < 1 or self.workers < 0:
            raise EvalConfigError(
                f"batch must be >= 1 and workers >= 0 (got batch {self.batch}, workers {self.workers})"
            )
        if self.threads is not None and self.threads < 1:
            raise EvalConfigError(f"threads must be >= 1 (got {self.threads})")
        object.__setattr__(self, "mask_map", checked_mask_map(self.mask_map, EvalConfigError))
        if self.imgsz is not None and (len(self.imgsz) != 2 or min(self.imgsz) <= 0):
            raise EvalConfigError(
                f"imgsz must be two positive integers (height width), got {self.imgsz}"
            )


def evaluate_checkpoint(job: EvalJob) -> dict:
    """Load, build the loader with the checkpoint's preprocessing, score; the report also names
    the checkpoint (path, sha256, model, parameters) so numbers can be traced back."""
    device = resolve_device(job.device)
    model, ckpt = load_checkpoint(job.checkpoint)
    spec = spec_of(model)
    try:
        imgsz = spec.check_input_hw(
            job.imgsz or ckpt.preprocess.get("input_hw") or spec.preprocess.input_hw, "imgsz"
        )
    except ModelSpecError as e:
        raise EvalConfigError(str(e)) from None
    data_cfg = DataConfig.for_preprocess(
        ckpt.preprocess,
        input_hw=imgsz,
        lane_labels=job.lane_labels,
        max_images=job.max_images,
        skip_bad_images=job.skip_bad_images,
        strict_labels=job.strict_labels,
        mask_map=job.mask_map,
    )
    dataset = BddDataset(job.data, job.split, data_cfg)
    loader = make_loader(dataset, job.batch, shuffle=False, workers=job.workers)
    report = evaluate(model.to(device), loader, job.eval, spec)
    report["labels"] = dataset.labels.to_dict()
    report["checkpoint"] = {
        "path": str(job.checkpoint),
        "sha256": ckpt.sha256,
        "model": ckpt.model_name,
        "config": ckpt.model_config,
        "pruned": ckpt.pruning is not None,
        "parameters": int(sum(p.numel() for p in model.parameters())),
    }
    report["data"] = {"root": str(job.data), "split": job.split, "input_hw": list(imgsz)}
    report["device"] = str(device) if device.type == "cpu" else torch.cuda.get_device_name(device)
    return report


def evaluate_path(job: EvalJob) -> dict:
    """A checkpoint (.pt) in PyTorch, an artifact (.onnx / .engine) through the runtime."""
    from compressor.train.eval_artifact import evaluate_artifact, is_artifact

    return evaluate_artifact(job) if is_artifact(job.checkpoint) else evaluate_checkpoint(job)


def write_eval_report(
    report: dict, json_path: str | Path, title: str = "Evaluation"
) -> tuple[Path, Path]:
    """`<name>.json` and `<name>.md` side by side, both written atomically."""
    json_path = Path(json_path)
    md_path = json_path.with_suffix(".md")
    write_json(json_path, report)
    atomic_write_text(md_path, eval_markdown(report, title))
    return json_path, md_path
