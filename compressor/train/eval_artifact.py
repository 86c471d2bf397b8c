"""Score a deployed artifact (FP32 / FP16 / INT8 ONNX through ONNX Runtime, an engine through
TensorRT) under the same protocol as a checkpoint: what `mtc-eval student.onnx` and the INT8
guard run.

The frames go through the torch-free runtime exactly as on the vehicle: the runtime's
`Preprocessor` (the sidecar's letterbox, colour order and normalisation), the backend, and the
runtime's `Postprocessor` (decode where the graph does not, class-aware NMS) — only with the
**evaluation** thresholds (conf 0.001, IoU 0.6, 300 boxes, every candidate into NMS) instead of
the deploy ones. The ground truth and the scoring are the checkpoint evaluation's (same reader,
same evaluators, same report), so the two numbers can be compared metric by metric.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from compressor.data import BddDataset, DataConfig
from compressor.train.eval_checkpoint import EvalJob
from compressor.train.evaluate import EvalConfig, EvalConfigError, make_report
from runtime.geometry import Letterbox, letterbox_mask
from runtime.metrics import DetectionEvaluator, SegmentationEvaluator
from runtime.postprocess import FrameResult, Postprocessor
from runtime.preprocess import Preprocessor
from runtime.sidecar import DeployThresholds, PreprocessInfo, Sidecar
from runtime.spec import TASK_DET

Infer = Callable[[np.ndarray], dict[str, np.ndarray]]


@dataclass
class EvalSet:
    """A split, preprocessed once as the runtime does, with its ground truth: scoring several
    models on it (the INT8 guard scores dozens) costs only their inference."""

    images: np.ndarray  # (N, 3, H, W) network input, as the runtime's Preprocessor makes it
    letterboxes: list[Letterbox]
    gt_boxes: list[np.ndarray]  # (G, 4) x1, y1, x2, y2 in original image pixels
    gt_classes: list[np.ndarray]
    gt_masks: dict[str, np.ndarray]  # task -> (N, H, W) letterboxed labels
    paths: list[str]
    lane_labels: str
    root: str = ""
    split: str = ""
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, n: int) -> EvalSet:
        """The first `n` images (the guard's search set)."""
        return EvalSet(
            self.images[:n],
            self.letterboxes[:n],
            self.gt_boxes[:n],
            self.gt_classes[:n],
            {t: m[:n] for t, m in self.gt_masks.items()},
            self.paths[:n],
            self.lane_labels,
            self.root,
            self.split,
            dict(self.info),
        )


def build_eval_set(
    data: str | Path,
    split: str,
    preprocess: PreprocessInfo,
    lane_labels: str = "thin",
    max_images: int | None = None,
    skip_bad_images: bool = False,
    progress: bool = True,
    strict_labels: bool = False,
    mask_map: tuple[str, ...] = (),
) -> EvalSet:
    """Read `split` of the data set at `data` and preprocess every image with the runtime's
    `Preprocessor` for `preprocess` (the artifact's sidecar block)."""
    cfg = DataConfig.for_preprocess(
        asdict(preprocess),  # the sidecar's input size, mean/std, colour and letterbox
        lane_labels=lane_labels,
        max_images=max_images,
        skip_bad_images=skip_bad_images,
        strict_labels=strict_labels,
        mask_map=mask_map,
    )
    ds = BddDataset(data, split, cfg)
    pre = Preprocessor(preprocess, 1)
    h, w = preprocess.input_hw
    n = len(ds)
    images = np.empty((n, 3, h, w), np.float32)
    masks = {"drivable": np.empty((n, h, w), np.uint8), "lane": np.empty((n, h, w), np.uint8)}
    boxes, classes, lbs, paths = [], [], [], []
    for i in tqdm(range(n), desc=f"read {split}", leave=False, disable=not progress):
        rgb, drivable, lane = ds.load_raw(i)
        bgr = np.ascontiguousarray(rgb[..., ::-1])  # the runtime reads frames as OpenCV does
        batch, (lb,) = pre([bgr])
        images[i] = batch[0]
        masks["drivable"][i] = letterbox_mask(drivable, lb)
        masks["lane"][i] = letterbox_mask(lane, lb)
        rec = ds.records[i]
        boxes.append(rec.boxes.copy())
        classes.append(rec.classes.copy())
        lbs.append(lb)
        paths.append(str(rec.image))
    info = {"labels": ds.labels.to_dict()}
    return EvalSet(images, lbs, boxes, classes, masks, paths, lane_labels, str(data), split, info)


def score(
    infer: Infer,
    evalset: EvalSet,
    sidecar: Sidecar,
    cfg: EvalConfig = EvalConfig(),
    batch: int = 8,
    tasks: tuple[str, ...] | None = None,
) -> dict:
    """Run `evalset` through `infer` (batch -> named outputs, as a runtime backend returns them)
    in batches of `batch`, decode and NMS them with the runtime's postprocess at the evaluation
    thresholds, and score them; returns the report `mtc-eval` writes."""
    if len(evalset) == 0:
        raise EvalConfigError("the evaluation set has no image; check the split and --max-images")
    return score_results(
        batch_results(infer, evalset, sidecar, cfg, batch), evalset, sidecar, cfg, tasks
    )


def score_results(
    batches: Iterable[tuple[int, list[FrameResult]]],
    evalset: EvalSet,
    sidecar: Sidecar,
    cfg: EvalConfig = EvalConfig(),
    tasks: tuple[str, ...] | None = None,
) -> dict:
    """The report for `batch_results` of `evalset` (a generator: inference is timed too; a list
    already made: only the scoring)."""
    scorer = _ArtifactScorer(cfg, sidecar, tasks)
    start = time.perf_counter()
    bar = tqdm(total=len(evalset), desc="eval", leave=False, disable=not cfg.progress)
    for s, results in batches:
        scorer.update(results, evalset, s)
        bar.update(len(results))
    bar.close()
    elapsed = time.perf_counter() - start
    return make_report(scorer, cfg, evalset.lane_labels, len(evalset), elapsed)


def batch_results(
    infer: Infer, evalset: EvalSet, sidecar: Sidecar, cfg: EvalConfig, batch: int
) -> Iterator[tuple[int, list[FrameResult]]]:
    """`evalset` through `infer` in batches of `batch` and the runtime's postprocess at the
    evaluation thresholds: (index of the batch's first frame, its results), in order."""
    rows = sidecar.det.max_det if sidecar.det is not None and sidecar.det.nms_in_graph else None
    thresholds = DeployThresholds(cfg.conf_thres, cfg.iou_thres, cfg.max_det, rows or 10**9)
    post = Postprocessor(sidecar, thresholds)
    for s in range(0, len(evalset), batch):
        images = evalset.images[s : s + batch]
        lbs = evalset.letterboxes[s : s + len(images)]
        yield s, post(infer(images), lbs, list(range(s, s + len(images))))


class _ArtifactScorer:
    """The checkpoint evaluation's evaluators, fed from the runtime's results."""

    def __init__(self, cfg: EvalConfig, sidecar: Sidecar, tasks: tuple[str, ...] | None) -> None:
        self.cfg = cfg
        self.det: dict[str, DetectionEvaluator] = {}
        self.seg: dict[str, SegmentationEvaluator] = {}
        if sidecar.det is not None and (tasks is None or TASK_DET in tasks):
            self.det = {m: DetectionEvaluator(m, max_det=cfg.max_det) for m in cfg.det_modes}
        for t in sidecar.seg.tasks if sidecar.seg is not None else ():
            if tasks is None or t in tasks:
                self.seg[t] = SegmentationEvaluator(sidecar.seg.num_classes(t), cfg.seg_mode)  # type: ignore[union-attr]

    def update(self, results: list, evalset: EvalSet, start: int) -> None:
        for j, r in enumerate(results):
            i = start + j
            for ev in self.det.values():
                ev.update(r.boxes, r.scores, r.classes, evalset.gt_boxes[i], evalset.gt_classes[i])
        lbs = [r.letterbox for r in results]
        for task, ev in self.seg.items():
            pred = np.stack([r.masks_net[task] for r in results])
            ev.update_letterboxed(pred, evalset.gt_masks[task][start : start + len(results)], lbs)


# What `mtc-eval` scores through the runtime (anything else is a checkpoint).
ARTIFACT_SUFFIXES: tuple[str, ...] = (".onnx", ".engine", ".plan")


def is_artifact(path: str | Path) -> bool:
    return Path(path).suffix.lower() in ARTIFACT_SUFFIXES


def evaluate_artifact(job: EvalJob) -> dict:
    """`job.checkpoint` names an `.onnx` / `.engine` with its sidecar: read the split with the
    sidecar's preprocessing, run it through the backend, score it. The report has the
    checkpoint report's keys, with an `artifact` block instead of `checkpoint`."""
    from runtime.pipeline import load_artifact
    from runtime.sidecar import read_sidecar

    path = Path(job.checkpoint)
    sc = read_sidecar(path)  # before any work: a missing or stale sidecar is one line
    hw = tuple(sc.preprocess.input_hw)
    if job.imgsz is not None and tuple(job.imgsz) != hw:
        raise EvalConfigError(
            f"--imgsz {job.imgsz[0]} {job.imgsz[1]}: {path.name} was exported for {hw[0]}x{hw[1]} "
            "(its sidecar); an artifact is scored at its own input size: drop --imgsz"
        )
    backend = load_artifact(path, backend=job.backend, threads=job.threads)
    try:
        evalset = build_eval_set(
            job.data,
            job.split,
            sc.preprocess,
            job.lane_labels,
            job.max_images,
            job.skip_bad_images,
            job.eval.progress,
            job.strict_labels,
            job.mask_map,
        )
        batch = max(sc.batch.min, min(job.batch, sc.batch.max))
        report = score(backend.infer, evalset, sc, job.eval, batch)
        device = backend.device
    finally:
        backend.close()
    report["artifact"] = artifact_block(path, sc, backend.name, device)
    report["data"] = {"root": str(job.data), "split": job.split, "input_hw": list(hw)}
    report["labels"] = evalset.info["labels"]
    report["device"] = device
    return report


def artifact_block(path: Path, sc: Sidecar, backend: str, device: str) -> dict:
    """What the report says of the artifact it scored, so numbers trace back to bytes."""
    return {
        "path": str(path),
        "sha256": sc.sha256,
        "format": sc.format,
        "precision": sc.precision,
        "model": sc.model.name,
        "parameters": sc.model.params,
        "checkpoint_sha256": sc.model.checkpoint_sha256,
        "backend": backend,
        "device": device,
        "int8": None if sc.int8 is None else asdict(sc.int8),
    }
