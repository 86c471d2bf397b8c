"""The compression job behind `mtc-compress`: calibrate -> prune -> distill (or fine-tune) ->
evaluate teacher and student on the same val split -> student checkpoint + report.

Everything a user can get wrong (ratio, protected names, taps, an unreachable target, missing
data or teacher) is checked before the first calibration batch runs."""

from __future__ import annotations

import copy
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from compressor.checkpoint import load_checkpoint, save_checkpoint
from compressor.compress_preflight import (
    check_batch_after_scan,
    check_batch_before_loading,
    undone_unless_resumable,
)
from compressor.compress_resume import (
    check_out_folder,
    remove_run_files,
    resume_train_config,
    resumed_prune,
    save_state,
)
from compressor.data import BddDataset, DataConfig, make_loader
from compressor.data.labels import checked_mask_map
from compressor.distill import DistillConfig, distill
from compressor.distill.taps import tap_modules
from compressor.flops import count_cost
from compressor.latency import is_local, measure_models, obtain_table, plan_measurer
from compressor.latency.config import LatencyConfig
from compressor.models.registry import spec_of
from compressor.models.spec import ModelSpec
from compressor.pruning import PruneConfig, prune
from compressor.pruning.depth import no_blocks_error
from compressor.train import EvalConfig, TrainConfig, evaluate, train
from compressor.train.report import HEADLINE, write_json
from runtime.errors import MtcError
from runtime.fileio import atomic_write_text
from runtime.latency_model.measure import TqdmProgress
from runtime.latency_model.table import split_block


def resolve_distill(cfg: DistillConfig, spec: ModelSpec) -> DistillConfig:
    """The model's default taps (its spec's) when none are named; ('all',) = every declared
    tap."""
    if cfg.taps == ("all",):
        return replace(cfg, taps=())
    if not cfg.taps and spec.taps:
        return replace(cfg, taps=tuple(spec.taps))
    return cfg


class CompressConfigError(MtcError):
    """A compression option outside its valid range, or an output folder already used."""


@dataclass(frozen=True)
class CompressConfig:
    """One mtc-compress run. `imgsz` None = the teacher checkpoint's input size. The student is
    trained for `epochs` with KD when `kd` (else plain fine-tuning); 0 = prune only.
    `step_epochs`: fine-tune epochs between iterative pruning steps."""

    teacher: str
    data: str
    out: str = "runs/compress"
    imgsz: tuple[int, int] | None = None
    prune: PruneConfig = field(default_factory=PruneConfig)
    kd: bool = True
    distill: DistillConfig = field(default_factory=DistillConfig)
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    epochs: int = 10
    step_epochs: int = 1
    batch: int = 8
    lr: float = 1e-3
    optimizer: str = "adamw"
    calib_batch: int = 2
    max_train_images: int | None = None
    max_val_images: int | None = None
    det_mode: str = "yolop"
    seg_mode: str = "global"
    val_lane_labels: str = "thin"
    workers: int = 2
    strict_labels: bool = False  # label problems are errors (compressor.data.labels)
    mask_map: tuple[str, ...] = ()  # e.g. ("drivable:7=1",): DataConfig.mask_map
    device: str = "auto"
    cpu_bf16: bool = False  # student training in bfloat16 autocast on CPU (TrainConfig.cpu_bf16)
    seed: int = 0
    overwrite: bool = False
    resume: bool = False  # continue the killed run in `out` from its train/last.pt
    progress: bool = True

    def __post_init__(self) -> None:
        if self.imgsz is not None:
            hw = tuple(int(v) for v in self.imgsz)
            if len(hw) != 2 or min(hw) <= 0:
                raise CompressConfigError(
                    f"imgsz must be two positive integers (height width), got {self.imgsz}"
                )
            object.__setattr__(self, "imgsz", hw)
        for name in ("epochs", "step_epochs", "workers"):
            if getattr(self, name) < 0:
                raise CompressConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("batch", "calib_batch"):
            if getattr(self, name) < 1:
                raise CompressConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise CompressConfigError(f"lr must be > 0, got {self.lr}")
        EvalConfig(det_mode=self.det_mode, seg_mode=self.seg_mode)  # validates both
        object.__setattr__(self, "mask_map", checked_mask_map(self.mask_map, CompressConfigError))
        for name, value, valid in (
            ("optimizer", self.optimizer, ("adamw", "sgd")),
            ("val_lane_labels", self.val_lane_labels, ("thin", "wide")),
        ):
            if value not in valid:
                raise CompressConfigError(
                    f"{name} must be one of {', '.join(valid)}, got {value!r}"
                )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["prune"], d["distill"] = self.prune.to_dict(), self.distill.to_dict()
        d["latency"] = self.latency.to_dict()
        d["imgsz"] = list(self.imgsz) if self.imgsz else None
        d["mask_map"] = list(self.mask_map)  # what JSON gives back (compress_state.json)
        return d


@dataclass
class CompressResult:
    student: nn.Module
    checkpoint: Path
    report: dict
    paths: dict[str, Path]


def _check_out(cfg: CompressConfig) -> Path:
    out = Path(cfg.out)
    check_out_folder(out, cfg.resume, cfg.overwrite)
    return out


def _loaders(cfg: CompressConfig, hw: tuple[int, int], preprocess: dict):
    def data(**kw) -> DataConfig:
        labels = {"strict_labels": cfg.strict_labels, "mask_map": cfg.mask_map}
        return DataConfig.for_preprocess(preprocess, input_hw=hw, **labels, **kw)

    calib = BddDataset(cfg.data, "train", data(max_images=cfg.max_train_images))
    val = BddDataset(
        cfg.data,
        "val",
        data(lane_labels=cfg.val_lane_labels, max_images=cfg.max_val_images),
    )
    calib_loader = make_loader(calib, cfg.calib_batch, shuffle=True, workers=0, seed=cfg.seed)
    return calib_loader, make_loader(val, cfg.batch, shuffle=False, workers=cfg.workers)


def finetune_config(cfg: CompressConfig, hw, out: Path, epochs: int) -> TrainConfig:
    """The training schedule `compress` gives the student (and the fine-tune between iterative
    steps): also what a fair control uses, e.g. the unpruned teacher trained just as long."""
    return TrainConfig(
        data=cfg.data,
        out=str(out),
        imgsz=hw,
        epochs=epochs,
        batch=cfg.batch,
        lr=cfg.lr,
        optimizer=cfg.optimizer,
        warmup_epochs=min(1.0, epochs / 2),
        max_train_images=cfg.max_train_images,
        max_val_images=cfg.max_val_images,
        workers=cfg.workers,
        det_mode=cfg.det_mode,
        seg_mode=cfg.seg_mode,
        val_lane_labels=cfg.val_lane_labels,
        eval_every=0,
        seed=cfg.seed,
        device=cfg.device,
        cpu_bf16=cfg.cpu_bf16,
        progress=cfg.progress,
        strict_labels=cfg.strict_labels,
        mask_map=tuple(cfg.mask_map),
        overwrite=True,
    )


def _finetune_between_steps(cfg: CompressConfig, hw, out: Path):
    if cfg.step_epochs == 0:
        return None

    def finetune(model: nn.Module, step: int) -> None:
        train(finetune_config(cfg, hw, out / f"step{step}", cfg.step_epochs), model=model)

    return finetune


def _train_student(cfg, dcfg, hw, teacher, student, record, out: Path) -> tuple[nn.Module, dict]:
    if cfg.epochs == 0:
        return student, {"trained": False}
    tcfg = resume_train_config(finetune_config(cfg, hw, out / "train", cfg.epochs), out, cfg.resume)
    fields = {"pruning": record}
    if cfg.kd:
        res = distill(teacher, student, None, dcfg, train_cfg=tcfg, init_checkpoint_fields=fields)
        taps = [asdict(t) for t in res.extension.student_taps]
        return res.student, {"trained": True, "kd": True, "taps": taps, "history": res.history}
    res = train(tcfg, model=student, init_checkpoint_fields=fields)
    return res.deploy_model, {"trained": True, "kd": False, "history": res.history}


def compress(
    cfg: CompressConfig, spec: ModelSpec | None = None, model: nn.Module | None = None
) -> CompressResult:
    """Run the whole job; see the module docstring. A teacher whose model is not registered
    passes its `spec` and the `model` architecture its checkpoint loads into."""
    t0 = time.perf_counter()
    out = _check_out(cfg)
    if not cfg.resume:
        check_batch_before_loading(cfg)
    with undone_unless_resumable(cfg, out):
        return _compress(cfg, out, t0, spec, model)


def _compress(
    cfg: CompressConfig, out: Path, t0: float, spec: ModelSpec | None, model: nn.Module | None
) -> CompressResult:
    teacher, tckpt = load_checkpoint(cfg.teacher, model=model)
    ms = spec_of(teacher, spec)
    if cfg.prune.depth and not ms.removable_blocks:
        raise no_blocks_error(teacher)  # before the data is read or the latency table measured
    if spec is not None:
        teacher.model_spec = spec  # type: ignore[assignment]  (travels with the student copy)
    hw = cfg.imgsz or tuple(tckpt.preprocess.get("input_hw") or ms.preprocess.input_hw)
    try:
        hw = ms.check_input_hw(hw, "imgsz")
    except MtcError as e:
        raise CompressConfigError(str(e)) from None
    calib_loader, val_loader = _loaders(cfg, hw, tckpt.preprocess)
    check_batch_after_scan(cfg, len(calib_loader.dataset))
    dcfg = resolve_distill(cfg.distill, ms)
    if cfg.kd and cfg.epochs > 0:
        tap_modules(teacher, dcfg.taps)  # unknown tap names fail here, before any work
    protected = tuple(ms.protected)
    table = None if cfg.resume else _latency_table(cfg, teacher, hw, protected)
    student = copy.deepcopy(teacher)
    loss_fn = ms.make_loss(teacher)
    flops_hw = tuple(cfg.prune.flops_input_hw or hw)
    pcfg = replace(cfg.prune, flops_input_hw=flops_hw)
    _clear_for_overwrite(cfg, out)
    prune_fn = resumed_prune(out, cfg.to_dict()) if cfg.resume else prune
    pruned = prune_fn(
        student,
        loss_fn,
        calib_loader,
        pcfg,
        protected=protected,
        finetune=_finetune_between_steps(cfg, hw, out),
        progress=cfg.progress,
        example_inputs=torch.zeros(1, 3, *hw),
        latency_table=table,
        measure=plan_measurer(teacher, table) if table is not None and is_local(table) else None,
        blocks=ms.removable_blocks,
    )
    student = pruned.model  # pruned in place; on --resume rebuilt from train/last.pt
    _save_state(cfg, out, pruned)
    t_prune = time.perf_counter() - t0
    student, train_info = _train_student(cfg, dcfg, hw, teacher, student, pruned.record, out)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 evaluates and writes
        return CompressResult(student, out / "student.pt", {}, {})
    ecfg = EvalConfig(det_mode=cfg.det_mode, seg_mode=cfg.seg_mode, progress=cfg.progress)
    t_eval = evaluate(teacher, val_loader, ecfg)
    s_eval = evaluate(student, val_loader, ecfg)
    ckpt_path = _save_student(cfg, out, student, pruned.record, s_eval["summary"], hw, tckpt)
    report = _report(
        cfg, (hw, flops_hw), teacher, student, tckpt, (t_eval, s_eval), pruned, train_info
    )
    report["latency"] = _latency_report(cfg, teacher, student, hw, pruned.report.latency, table)
    report["timings_s"] = {"prune": round(t_prune, 2), "total": round(time.perf_counter() - t0, 2)}
    paths = _write_report(out, report, pruned.report)
    return CompressResult(student, ckpt_path, report, {"checkpoint": ckpt_path, **paths})


def _clear_for_overwrite(cfg: CompressConfig, out: Path) -> None:
    """--overwrite: the old run's files go before this run writes any (stepN/ fine-tunes)."""
    if cfg.overwrite and int(os.environ.get("RANK", "0")) == 0:
        remove_run_files(out)


def _save_state(cfg: CompressConfig, out: Path, pruned) -> None:
    """After pruning: what a --resume of this run needs (only rank 0 writes)."""
    if not cfg.resume and int(os.environ.get("RANK", "0")) == 0:
        out.mkdir(parents=True, exist_ok=True)
        save_state(out, cfg.to_dict(), pruned.report)


def _latency_table(cfg: CompressConfig, teacher: nn.Module, hw, protected):
    """The table for a latency target: the given file (checked against the flags) or one
    measured here on ONNX Runtime CPU (cached); None for params / FLOPs targets."""
    if cfg.prune.target != "latency":
        return None
    lat = cfg.latency
    bar = TqdmProgress("latency table", enabled=cfg.progress)
    try:
        return obtain_table(
            teacher,
            hw,
            lat.batch,
            table_path=cfg.prune.latency_table,
            backend=lat.backend,
            precision=lat.precision if cfg.prune.latency_table else lat.resolved_precision,
            device=lat.device,
            threads=lat.ort_threads,
            protected=tuple(protected) + tuple(cfg.prune.protected),
            protect_outputs=cfg.prune.protect_outputs,
            round_to=cfg.prune.round_to,
            min_width=cfg.prune.min_width,
            cache=Path(lat.cache_dir) if lat.cache_dir else None,
            progress=bar,
            log=print if cfg.progress else (lambda _m: None),
        )
    finally:
        bar.close()


def _latency_report(cfg, teacher, student, hw, predicted: dict | None, table) -> dict:
    """Teacher and student timed side by side (interleaved) on ONNX Runtime CPU, next to the
    table's prediction when the target was latency."""
    lat = cfg.latency
    out: dict = {"predicted": predicted}
    local = table is None or is_local(table)
    if not lat.measure or lat.backend != "onnxruntime" or not local:
        why = (
            "disabled"
            if not lat.measure
            else f"the {lat.backend} table's device is not this machine"
        )
        out["measured"] = None
        out["not_measured_because"] = why
        return out
    res = measure_models(
        {"teacher": teacher, "student": student},
        hw,
        lat.batch,
        threads=lat.ort_threads,
        rounds=lat.rounds,
    )
    t, s = res["teacher"]["median_ms"], res["student"]["median_ms"]
    out["measured"] = {
        "teacher_ms": t,
        "student_ms": s,
        "speedup": round(t / s, 4),
        "student_over_teacher": round(s / t, 4),
        "backend": "onnxruntime",
        "device": res["teacher"]["device"],
        "threads": lat.ort_threads,
        "batch": lat.batch,
        "rounds": {"teacher": res["teacher"]["rounds_ms"], "student": res["student"]["rounds_ms"]},
        "clock": "thread CPU time" if lat.ort_threads == 1 else "wall time",
    }
    if predicted:
        p_s, p_t = predicted["predicted_after_ms"], predicted["predicted_before_ms"]
        out["prediction_error"] = round(p_s / s - 1, 4)
        # the same, with the teacher as the yardstick: load drift since the table cancels out
        out["prediction_error_drift_corrected"] = round(p_s * t / (p_t * s) - 1, 4)
    return out


def _save_student(cfg, out: Path, student, record: dict, metrics: dict, hw, tckpt) -> Path:
    """The student checkpoint: pruned weights + the pruning record (so load_checkpoint rebuilds
    the pruned architecture), preprocessing at the run's input size, metrics and provenance."""
    path = out / "student.pt"
    save_checkpoint(
        path,
        student,
        pruning=record,
        metrics=metrics,
        preprocess={**tckpt.preprocess, "input_hw": list(hw)},
        tasks=tckpt.tasks,
        class_names=tckpt.class_names,
        provenance={
            "stage": "compress",
            "teacher": str(cfg.teacher),
            "teacher_sha256": tckpt.sha256,
            "data": cfg.data,
        },
    )
    return path


def _model_facts(model: nn.Module, hw, summary: dict) -> dict:
    cost = count_cost(model, hw)
    return {"params": cost.params, "flops": cost.flops, "metrics": summary}


def _report(cfg, sizes, teacher, student, tckpt, evals, pruned, train_info) -> dict:
    (hw, flops_hw), (t_eval, s_eval) = sizes, evals
    teacher_facts = _model_facts(teacher, flops_hw, t_eval["summary"])
    student_facts = _model_facts(student, flops_hw, s_eval["summary"])
    keys = [k for k, _ in HEADLINE if k in t_eval["summary"] and k in s_eval["summary"]]
    deltas = {k: round(100 * (s_eval["summary"][k] - t_eval["summary"][k]), 3) for k in keys}
    return {
        "teacher": {"checkpoint": str(cfg.teacher), "sha256": tckpt.sha256, **teacher_facts},
        "student": {"checkpoint": str(Path(cfg.out) / "student.pt"), **student_facts},
        "deltas_points": deltas,
        "params_reduction": round(1 - student_facts["params"] / teacher_facts["params"], 6),
        "flops_reduction": round(1 - student_facts["flops"] / teacher_facts["flops"], 6),
        "input_hw": list(hw),
        "flops_input_hw": list(flops_hw),
        "eval_protocol": t_eval["protocol"],
        "val_images": t_eval["num_images"],
        "pruning": pruned.report.to_dict(),
        "training": train_info,
        "settings": cfg.to_dict(),
    }


def _markdown(report: dict, prune_md: str) -> str:
    t, s, d = report["teacher"], report["student"], report["deltas_points"]
    h, w = report["input_hw"]
    fh, fw = report["flops_input_hw"]
    lines = [
        "# Compression report",
        "",
        f"Teacher `{t['checkpoint']}` -> student `{s['checkpoint']}`; both evaluated on the same "
        f"{report['val_images']} val images at {w}x{h}.",
        "",
        "| | teacher | student | delta |",
        "|---|---:|---:|---:|",
        f"| parameters | {t['params']:,} | {s['params']:,} | {-report['params_reduction']:+.1%} |",
        f"| GFLOPs @ {fw}x{fh} | {t['flops'] / 1e9:.3f} | {s['flops'] / 1e9:.3f} | "
        f"{-report['flops_reduction']:+.1%} |",
    ]
    for key, label in HEADLINE:
        if key in d:
            lines.append(
                f"| {label} | {100 * t['metrics'][key]:.1f} | "
                f"{100 * s['metrics'][key]:.1f} | {d[key]:+.1f} |"
            )
    p = report["eval_protocol"]
    tr = report["training"]
    how = (
        ("distilled (KD)" if tr.get("kd") else "fine-tuned") if tr.get("trained") else "not trained"
    )
    set_ = report["settings"]
    lines += [
        "",
        f"Metrics in percent, deltas in points. Detection mode {p['det_modes'][0]}; seg "
        f"metrics from {p['seg_aggregation']}; lane labels {p['lane_labels_text']}.",
        "",
        *_latency_md(report.get("latency") or {}),
        "## Pruning",
        "",
        prune_md,
        "![per-layer widths](widths.png)",
        *(
            ["", "![latency saved per layer](latency_savings.png)"]
            if report.get("latency", {}).get("predicted")
            else []
        ),
        "",
        "## Student training",
        "",
        f"Student {how} for {set_['epochs']} epochs (lr {set_['lr']}, batch {set_['batch']})"
        + (f"; taps: {', '.join(x['name'] for x in tr.get('taps', []))}." if tr.get("kd") else "."),
        "",
        "## Settings",
        "",
        "```json",
        _json_block(set_),
        "```",
    ]
    return "\n".join(lines) + "\n"


def _latency_md(lat: dict) -> list[str]:
    m, p = lat.get("measured"), lat.get("predicted")
    if not m and not p:
        return []
    lines = ["## Latency", ""]
    if m:
        lines += [
            f"Measured side by side (interleaved, {len(m['rounds']['teacher'])} rounds) on "
            f"{m['backend']} ({m['device']}), batch {m['batch']}, {m['threads'] or 'default'} "
            f"thread(s), {m['clock']}:",
            "",
            "| | teacher | student | student / teacher |",
            "|---|---:|---:|---:|",
            f"| measured ms / batch | {m['teacher_ms']:.2f} | {m['student_ms']:.2f} | "
            f"{m['student_over_teacher']:.3f} ({m['speedup']:.2f}x faster) |",
        ]
    else:
        lines.append(f"Not measured here: {lat.get('not_measured_because')}.")
    if p:
        k = p["key"]
        lines.append(
            f"| predicted ms / batch ({k['backend']} {k['precision']}, {k['device']}) | "
            f"{p['predicted_before_ms']:.2f} | {p['predicted_after_ms']:.2f} | "
            f"{p['predicted_after_ms'] / p['predicted_before_ms']:.3f} |"
        )
        if "prediction_error" in lat:
            lines += [
                "",
                f"Prediction error for the student: {lat['prediction_error']:+.1%} "
                f"({lat['prediction_error_drift_corrected']:+.1%} with the teacher measured now as "
                "the yardstick).",
            ]
        for c in p.get("calibration", []):
            lines.append(
                f"- plan check {c['round']}: predicted {c['predicted_ms']:.2f} ms, measured "
                f"{c['measured_ms']:.2f} ms"
            )
        lines += _block_note(p)
    return lines + [""]


def _block_note(p: dict) -> list[str]:
    """A plan whose grid splits the backend's channel blocks pays for channels it removed."""
    step = p.get("round_to") or (p.get("grid") or {}).get("round_to")
    block = split_block(p.get("channel_block"), step)
    if block is None:
        return []
    return [
        "",
        f"Note: the backend computes convolutions in blocks of {block} channels and this plan's "
        f"widths are on a step of {step}: a width between two blocks costs as much as the next "
        f"block up, so the student measures slower than predicted. Plan with --round-to {block}.",
    ]


def _json_block(obj: dict) -> str:
    import json

    return json.dumps(obj, indent=2)


def _write_report(out: Path, report: dict, prune_report) -> dict[str, Path]:
    paths = {"json": out / "report.json", "markdown": out / "report.md", "plot": out / "widths.png"}
    write_json(paths["json"], report)
    atomic_write_text(paths["markdown"], _markdown(report, prune_report.to_markdown()))
    prune_report.plot_widths(paths["plot"], title="Per-layer output widths")
    savings = prune_report.plot_savings(out / "latency_savings.png")
    if savings is not None:
        paths["latency_plot"] = savings
    return paths
