"""Evaluation under YOLOP's protocol, for any model whose outputs are a subset of the built-in
tasks (a seg-only model is evaluated on its seg tasks only).

Detections: decoded head -> `runtime.boxes.postprocess_detections` (conf 0.001, IoU 0.6, 300 per
image) -> boxes back to the original image with the sample's letterbox -> `DetectionEvaluator`.
Segmentation: argmax -> letterbox padding cropped -> `SegmentationEvaluator`. The same numpy code
scores the exported model in the runtime, so training-time and deployed numbers agree.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from compressor.models.registry import spec_of
from compressor.models.spec import ModelSpec, ModelSpecError
from runtime.boxes import postprocess_detections
from runtime.decoders import get_decoder
from runtime.errors import MtcError
from runtime.geometry import boxes_from_letterbox
from runtime.metrics import DetectionEvaluator, SegmentationEvaluator
from runtime.spec import NMS_CONF, NMS_IOU, NMS_MAX_DET, TASK_DET, TASK_DRIVABLE, TASK_LANE, TASKS

SEG_MODE_TEXT = {
    "global": "one global confusion matrix over the whole split",
    "per_batch": "per-batch scores averaged over batches (YOLOP's convention)",
}
LANE_TEXT = {"thin": "thin (2 px, YOLOP's evaluation labels)", "wide": "widened (8 px, as trained)"}


class EvalConfigError(MtcError):
    """An evaluation option outside its valid range."""


@dataclass(frozen=True)
class EvalConfig:
    """How predictions are scored. `det_mode` "both" reports yolop and coco (yolop is primary)."""

    det_mode: str = "yolop"
    seg_mode: str = "global"
    conf_thres: float = NMS_CONF
    iou_thres: float = NMS_IOU
    max_det: int = NMS_MAX_DET
    amp: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        problems = []
        if self.det_mode not in ("yolop", "coco", "both"):
            problems.append(f"det_mode must be yolop, coco or both (got {self.det_mode!r})")
        if self.seg_mode not in SEG_MODE_TEXT:
            problems.append(f"seg_mode must be global or per_batch (got {self.seg_mode!r})")
        if not (0.0 <= self.conf_thres < 1.0 and 0.0 < self.iou_thres <= 1.0):
            problems.append(
                f"conf_thres must be in [0, 1) and iou_thres in (0, 1] (got {self.conf_thres}, "
                f"{self.iou_thres})"
            )
        if self.max_det < 1:
            problems.append(f"max_det must be >= 1 (got {self.max_det})")
        if problems:
            raise EvalConfigError("bad evaluation config: " + "; ".join(problems))

    @property
    def det_modes(self) -> tuple[str, ...]:
        return ("yolop", "coco") if self.det_mode == "both" else (self.det_mode,)


class _Scorer:
    """Per-task evaluators, created lazily for the tasks the model actually outputs."""

    def __init__(
        self, cfg: EvalConfig, spec: ModelSpec | None = None, params: dict | None = None
    ) -> None:
        self.cfg, self.spec, self.params = cfg, spec, params or {}
        self.det: dict[str, DetectionEvaluator] = {}
        self.seg: dict[str, SegmentationEvaluator] = {}

    def _seg_classes(self, task: str) -> int:
        return self.spec.task(task).num_classes if self.spec is not None else 2

    def update(self, outputs: dict, batch: dict, input_hw: tuple[int, int]) -> None:
        meta = batch["meta"]
        boxes = [m["letterbox"] for m in meta]
        if TASK_DET in outputs:
            self._update_det(self._decoded(outputs[TASK_DET], input_hw), meta)
        for task in (TASK_DRIVABLE, TASK_LANE):
            if task in outputs:
                ev = self.seg.setdefault(
                    task, SegmentationEvaluator(self._seg_classes(task), self.cfg.seg_mode)
                )
                pred = outputs[task].argmax(1).to(torch.uint8).cpu().numpy()
                ev.update_letterboxed(pred, batch[task].numpy(), boxes)

    def _decoded(self, det: torch.Tensor, input_hw: tuple[int, int]) -> torch.Tensor:
        """Candidate rows; a model that leaves decoding to the runtime is decoded by the same
        numpy decoder the runtime uses (runtime.decoders), so evaluation scores what ships."""
        spec = self.spec
        if spec is None or spec.decoded_in_graph or spec.det is None or isinstance(det, list):
            return det
        rows = get_decoder(spec.det.decoder).decode(  # type: ignore[arg-type]
            det.float().cpu().numpy(), input_hw, self.params
        )
        return torch.from_numpy(rows)

    def _update_det(self, decoded: torch.Tensor, meta: list[dict]) -> None:
        if not self.det:
            self.det = {
                m: DetectionEvaluator(m, max_det=self.cfg.max_det) for m in self.cfg.det_modes
            }
        if isinstance(decoded, list | tuple):
            raise EvalConfigError("det output is raw per-level logits; evaluate needs model.eval()")
        preds = postprocess_detections(
            decoded.float().cpu().numpy(), self.cfg.conf_thres, self.cfg.iou_thres, self.cfg.max_det
        )
        for p, m in zip(preds, meta):
            boxes = boxes_from_letterbox(p[:, :4], m["letterbox"])
            for ev in self.det.values():
                ev.update(boxes, p[:, 4], p[:, 5].astype(np.int64), m["boxes"], m["classes"])


def _model_device(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def lane_labels_of(loader: torch.utils.data.DataLoader) -> str:
    """Which lane labels the data set reads (the report must say; YOLOP scores thin ones)."""
    ds = loader.dataset
    while hasattr(ds, "dataset") and not hasattr(ds, "cfg"):  # Subset and friends
        ds = ds.dataset
    return getattr(getattr(ds, "cfg", None), "lane_labels", "unknown")


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: torch.utils.data.DataLoader,
    cfg: EvalConfig = EvalConfig(),
    spec: ModelSpec | None = None,
) -> dict:
    """Score `model` on every batch of `loader`; returns the report dict (see `summarize`).
    The model's spec (given, or its own) says its class counts and detection decoder."""
    was_training = model.training
    model.eval()
    device = _model_device(model)
    try:
        ms: ModelSpec | None = spec_of(model, spec)
    except ModelSpecError:  # a model without a spec: decoded detection, 2-class masks
        ms = None
    scorer = _Scorer(cfg, ms, ms.decoder_info(model) if ms is not None else None)
    start, n_images = time.perf_counter(), 0
    try:
        for batch in tqdm(loader, desc="eval", leave=False, disable=not cfg.progress):
            images = batch["images"].to(device, non_blocking=True)
            with torch.autocast(device.type, enabled=cfg.amp and device.type == "cuda"):
                outputs = model(images)
            scorer.update(outputs, batch, tuple(images.shape[2:]))
            n_images += images.shape[0]
    finally:
        model.train(was_training)
    if n_images == 0:
        raise EvalConfigError(
            "the evaluation loader yielded no images; check the split and --max-images"
        )
    elapsed = time.perf_counter() - start
    return make_report(scorer, cfg, lane_labels_of(loader), n_images, elapsed)


def make_report(scorer: Any, cfg: EvalConfig, lane_labels: str, n: int, elapsed: float) -> dict:
    """The report of one evaluation from its evaluators (`scorer.det`: mode -> evaluator,
    `scorer.seg`: task -> evaluator): what a checkpoint's and an artifact's evaluation share."""
    report: dict = {
        "tasks": [t for t in TASKS if _has(scorer, t)],
        "num_images": n,
        "time_s": elapsed,
        "images_per_s": n / elapsed if elapsed > 0 else None,
        "protocol": {
            "det_modes": list(cfg.det_modes),
            "nms": {"conf": cfg.conf_thres, "iou": cfg.iou_thres, "max_det": cfg.max_det},
            "boxes_compared_at": "original image resolution",
            "seg_mode": cfg.seg_mode,
            "seg_aggregation": SEG_MODE_TEXT[cfg.seg_mode],
            "seg_resolution": "network input with letterbox padding removed",
            "lane_labels": lane_labels,
            "lane_labels_text": LANE_TEXT.get(lane_labels, lane_labels),
        },
    }
    if scorer.det:
        report[TASK_DET] = {mode: ev.compute() for mode, ev in scorer.det.items()}
    for task, ev in scorer.seg.items():
        report[task] = ev.compute()
    report["summary"] = summarize(report, cfg.det_modes[0])
    return report


def _has(scorer: Any, task: str) -> bool:
    return bool(scorer.det) if task == TASK_DET else task in scorer.seg


def summarize(report: dict, det_mode: str) -> dict:
    """Flat headline numbers plus `score`: the mean of det mAP50, drivable mIoU and lane IoU
    over the tasks present (each in [0, 1]), the default key for picking the best checkpoint."""
    s: dict = {}
    if TASK_DET in report:
        d = report[TASK_DET][det_mode]
        s.update(
            det_precision=d["precision"],
            det_recall=d["recall"],
            det_map50=d["map50"],
            det_map50_95=d["map50_95"],
        )
    if TASK_DRIVABLE in report:
        d = report[TASK_DRIVABLE]
        s.update(drivable_miou=d["miou"], drivable_acc=d["pixel_accuracy"])
    if TASK_LANE in report:
        d = report[TASK_LANE]
        s.update(
            lane_iou=d["iou"],
            lane_recall=d["recall"],
            lane_balanced_acc=d["balanced_accuracy"],
            lane_pixel_acc=d["pixel_accuracy"],
        )
    heads = [max(0.0, s[k]) for k in ("det_map50", "drivable_miou", "lane_iou") if k in s]
    s["score"] = float(np.mean(heads)) if heads else 0.0
    return s
