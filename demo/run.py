"""The main job on an embedded default: synthetic data -> teacher -> task-aware prune -> distill
-> evaluate both -> export both -> torch-free runtime -> one report.

A top-level package of its own because it uses all three: `compressor` (training, compression),
`export` and `runtime` (validating and timing what was built). Every stage is a call into the
same public APIs the CLIs use; nothing here is demo-only logic except choosing sizes that fit a
2-core CPU in minutes.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2

from demo.report import plot_latency, plot_metrics, write_overlays, write_report
from export.config import ExportConfig, InputOptions, Int8Options, OutputOptions, TensorRTOptions
from export.errors import Int8Error, TensorRTUnavailableError
from export.pipeline import ExportResult, export_model
from runtime.errors import MtcError
from runtime.pipeline import RunConfig, run
from runtime.sources import open_source


def _round_to_valid(value: object) -> bool:
    from compressor.pruning.config import round_to_ok

    return round_to_ok(value)


class DemoConfigError(MtcError):
    """A demo option outside its valid range."""


@dataclass(frozen=True)
class DemoConfig:
    """Defaults fit the whole pipeline in 12-13.5 minutes on 2 CPU cores with native bfloat16;
    `real()` gives real-size settings for BDD100K."""

    out: str = "demo_out"
    data: str | None = None  # None: generate a synthetic data set under <out>/data
    n_train: int = 256
    n_val: int = 96  # 48 made a 1-point budget noisy (seed-to-seed std 2-4 points on detection)
    seed: int = 0
    model: str = "yolop"  # a registered model; width/depth apply where its builder takes them
    imgsz: tuple[int, int] = (192, 320)
    # width 0.75: smaller teachers spend their ONNX Runtime CPU time where pruning cannot reach
    # (the full-resolution 2-channel seg convs, per-op overhead): at 0.25 every group at its
    # minimum width is only 1.14x faster, at 0.5 about 1.5x, so 1.5x cost every task accuracy;
    # at 0.75 a plan that takes at most half of any group reaches it (docs/LATENCY.md)
    width: float = 0.75
    depth: float = 0.33
    teacher_epochs: int = 12
    # 16: the pruned student dips for 1-3 epochs (bench_ablation); on the w0.75 plan lane IoU
    # gains from 8 to 12 epochs, and 16 took seed 1's drivable mIoU from -1.05 to -0.61 points
    # (20: -0.68, no better) at ~25 s an epoch (docs/LATENCY.md)
    distill_epochs: int = 16
    batch: int = 8
    augment: bool = False  # off: measured better on the small synthetic set (bench_teacher)
    target: str = "latency"  # what `ratio` removes: latency (measured here) | params | flops
    # 0.36 of the predicted latency (1.56x predicted): measured 1.53-1.60x on the w0.75 teacher
    ratio: float = 0.36
    # channel widths the plan keeps are multiples of this; None = the latency table's channel
    # block (PruneConfig's default): 16 where ONNX Runtime CPU runs convolutions in blocks of 16
    # channels (AVX-512: a 48->40 cut buys nothing, 24 costs what 32 does, measured); at 8 the
    # demo's plans measured ~10 % slower than predicted
    round_to: int | str | None = None
    # plans measured to calibrate the latency model; 0 keeps the plan a function of the cached
    # latency table alone, so a re-run with the same seed reproduces the same student
    latency_rounds: int = 0
    # where the latency table is cached: None = the machine's cache ($MTC_CACHE_DIR, else
    # ~/.cache/mtc), so every demo run on this machine plans against the same measured table
    # and two runs of one seed give the same student, whatever --out they write to
    latency_cache: str | None = None
    # interleaved rounds of the teacher-vs-student timing: 15, not 7, because one demo run
    # hit a noisy spell of the host (round ratios 0.65-0.79) and its median moved 5 %
    timing_rounds: int = 15
    importance: str = "tci_gcp"
    # no channel group loses more than half its channels: without the cap the latency plan guts
    # the high-resolution segmentation decoder convs, where time is cheapest to buy
    max_group_ratio: float = 0.5
    kd: bool = True
    # feature-distillation weight: at 1.0 the KD term (1.6 at the start even for an unpruned
    # student) pulls the fine-tune off the teacher's optimum (drivable mIoU -1.7 with nothing
    # pruned, measured); 0.1 keeps the task losses in charge (docs/LATENCY.md)
    kd_weight: float = 0.1
    distill_lr: float = 1e-3
    calib_batches: int = 8
    engine: str = "auto"  # auto = fp16 where TensorRT is installed, else none
    # the student is also exported to INT8 (Q/DQ), calibrated on the train split and guarded
    # per task against its FP32 export on the val split (export.int8; docs/INT8.md)
    int8: bool = True
    calib_images: int = 128
    source: str | None = None  # extra frames (folder/glob/video) for overlays and latency
    runtime_frames: int = 32
    runtime_batches: tuple[int, ...] = (1, 4)
    overlay_frames: int = 4
    device: str = "auto"
    # data-loader workers: 0 loads in the training thread (8 ms a sample here, <10 % of a step)
    # and leaves every core to torch
    workers: int = 0
    # torch threads; None = cores - workers (min 1): on a 2-core box two OpenMP threads fighting
    # a data-loader worker made training steps ~20x slower (measured)
    threads: int | None = None
    # bfloat16 autocast for training on CPU; None = on where the CPU computes bfloat16 natively
    # (AVX512-BF16 / AMX: 1.4x faster steps, measured), off elsewhere (emulated: slower)
    cpu_bf16: bool | None = None
    progress: bool = True
    overwrite: bool = False  # re-run into an --out that holds a previous demo run

    def __post_init__(self) -> None:
        problems = [
            f"{name} must be {rule} (got {getattr(self, name)!r})"
            for name, ok, rule in (
                ("n_train", self.n_train >= 8, ">= 8"),
                ("n_val", self.n_val >= 4, ">= 4"),
                ("ratio", 0 < self.ratio < 1, "in (0, 1)"),
                ("max_group_ratio", 0 < self.max_group_ratio <= 1, "in (0, 1]"),
                ("round_to", _round_to_valid(self.round_to), ">= 1, 'auto' or None"),
                ("timing_rounds", self.timing_rounds >= 1, ">= 1"),
                ("kd_weight", self.kd_weight >= 0, ">= 0"),
                ("distill_lr", self.distill_lr > 0, "> 0"),
                ("target", self.target in ("latency", "params", "flops"), "latency|params|flops"),
                ("teacher_epochs", self.teacher_epochs >= 1, ">= 1"),
                ("distill_epochs", self.distill_epochs >= 0, ">= 0"),
                ("engine", self.engine in ("auto", "fp16", "fp32", "none"), "auto|fp16|fp32|none"),
                ("runtime_frames", self.runtime_frames >= 1, ">= 1"),
                ("calib_images", self.calib_images >= 8, ">= 8"),
            )
            if not ok
        ]
        problems += self._model_problems()
        if problems:
            raise DemoConfigError("bad demo option: " + "; ".join(problems))

    def _model_problems(self) -> list[str]:
        from compressor.models.registry import get_spec
        from compressor.models.spec import ModelSpecError

        try:
            get_spec(self.model).check_input_hw(self.imgsz, "imgsz")
        except ModelSpecError as e:
            return [str(e)]
        return []

    def arch(self) -> dict[str, Any]:
        """width / depth for a model whose builder takes them (else its own architecture)."""
        from compressor.models.registry import builder_params

        params = builder_params(self.model)
        return {k: getattr(self, k) for k in ("width", "depth") if params is None or k in params}

    @classmethod
    def real(cls, data: str, **overrides: Any) -> DemoConfig:
        """Real BDD100K: the protocol's 640x384 input, full-width YOLOP teacher, more epochs."""
        base: dict[str, Any] = dict(
            data=data,
            imgsz=(384, 640),
            width=1.0,
            depth=1.0,
            teacher_epochs=240,
            distill_epochs=50,
            batch=24,
            augment=True,
            calib_batches=32,
            runtime_frames=200,
        )
        base.update(overrides)
        return cls(**base)

    def resolved_cpu_bf16(self) -> bool:
        from compressor.train.setup import cpu_has_fast_bf16

        return cpu_has_fast_bf16() if self.cpu_bf16 is None else self.cpu_bf16

    def resolved_engine(self) -> str:
        if self.engine != "auto":
            return self.engine
        return "fp16" if importlib.util.find_spec("tensorrt") is not None else "none"


@dataclass
class DemoResult:
    out: Path
    report_md: Path
    report_json: Path
    data: dict = field(default_factory=dict)


class _Demo:
    def __init__(self, cfg: DemoConfig, log: Callable[[str], None]) -> None:
        self.cfg, self.log = cfg, log
        self.out = Path(cfg.out)
        self.timings: dict[str, float] = {}

    def stage(self, name: str, fn: Callable[[], Any]) -> Any:
        self.log(f"\n=== {name} ===")
        t0 = time.perf_counter()
        result = fn()
        self.timings[name] = time.perf_counter() - t0
        self.log(f"--- {name}: {self.timings[name]:.0f} s")
        return result

    # -- stages ---------------------------------------------------------------------------
    def data(self) -> Path:
        if self.cfg.data:
            return Path(self.cfg.data)
        from compressor.data import SynthConfig, generate

        root = self.out / "data"
        if (root / "synth_manifest.json").is_file():
            self.log(f"reusing synthetic data set in {root}")
            return root
        generate(
            SynthConfig(
                out=root, n_train=self.cfg.n_train, n_val=self.cfg.n_val, seed=self.cfg.seed
            ),
            progress=self.cfg.progress,
        )
        return root

    def teacher(self, data: Path) -> Path:
        from compressor.train import TrainConfig, train

        c = self.cfg
        res = train(
            TrainConfig(
                data=str(data),
                out=str(self.out / "teacher"),
                imgsz=c.imgsz,
                epochs=c.teacher_epochs,
                batch=c.batch,
                augment=c.augment,
                eval_every=max(1, c.teacher_epochs // 3),
                model=c.model,
                **c.arch(),
                seed=c.seed,
                device=c.device,
                cpu_bf16=c.resolved_cpu_bf16(),
                workers=c.workers,
                progress=c.progress,
                overwrite=c.overwrite,
            )
        )
        best = res.best or res.last
        if best is None:
            raise DemoConfigError(f"teacher training wrote no checkpoint in {self.out / 'teacher'}")
        return Path(best)

    def compress(self, data: Path, teacher: Path) -> Any:
        from compressor.compress import CompressConfig, compress
        from compressor.distill import DistillConfig
        from compressor.latency.config import LatencyConfig
        from compressor.pruning import PruneConfig

        c = self.cfg
        prune = PruneConfig(
            ratio=c.ratio,
            target=c.target,
            importance=c.importance,
            max_group_ratio=c.max_group_ratio,
            round_to=c.round_to,
            calib_batches=c.calib_batches,
            latency_rounds=c.latency_rounds,
            seed=c.seed,
        )
        return compress(
            CompressConfig(
                teacher=str(teacher),
                data=str(data),
                out=str(self.out / "student"),
                imgsz=c.imgsz,
                prune=prune,
                latency=LatencyConfig(cache_dir=c.latency_cache, rounds=c.timing_rounds),
                kd=c.kd,
                distill=DistillConfig(kd_weight=c.kd_weight),
                epochs=c.distill_epochs,
                lr=c.distill_lr,
                batch=c.batch,
                seed=c.seed,
                device=c.device,
                cpu_bf16=c.resolved_cpu_bf16(),
                workers=c.workers,
                progress=c.progress,
                overwrite=True,
            )
        )

    def export(self, ckpt: Path, name: str, data: Path | None = None) -> ExportResult:
        """`data`: also write the guarded INT8 ONNX, calibrated and scored on that data set."""
        int8 = (
            Int8Options(
                enabled=True,
                calib_data=str(data),
                calib_images=min(self.cfg.calib_images, self.cfg.n_train),
            )
            if data is not None
            else Int8Options()
        )
        cfg = ExportConfig(
            # the demo owns its folder: a re-run replaces its own exports
            output=OutputOptions(
                str(self.out / "export"), name, overwrite=True, progress=self.cfg.progress
            ),
            input=InputOptions(self.cfg.imgsz, max_batch=max(8, *self.cfg.runtime_batches)),
            tensorrt=TensorRTOptions(engine=self.cfg.resolved_engine()),
            int8=int8,
        )
        try:
            return export_model(str(ckpt), cfg)
        except (TensorRTUnavailableError, Int8Error) as e:  # the other artifacts are written
            self.log(f"{'INT8 ONNX' if isinstance(e, Int8Error) else 'engine'} not written: {e}")
            return e.result

    def latency(self, artifacts: dict[str, ExportResult], frames: str) -> list[dict]:
        rows = []
        for model, res in artifacts.items():
            for kind in ("engine", "onnx", "onnx_fp16"):
                path = res.artifact(kind)
                if path is None:
                    continue
                batches = self.cfg.runtime_batches if kind != "onnx_fp16" else (1,)
                for b in batches:
                    report = self.out / "latency" / f"{model}_{kind}_b{b}.json"
                    r = run(
                        path,
                        frames,
                        RunConfig(
                            batch=b,
                            max_frames=self.cfg.runtime_frames,
                            report=str(report),
                            progress=self.cfg.progress,
                            keep_results=False,
                        ),
                    )
                    rows.append(
                        {
                            "model": model,
                            "artifact": path.name,
                            "artifact_kind": kind,
                            "batch": b,
                            "report": r.report.to_dict() | {"timeline_ms": []},
                        }
                    )
        return rows

    def overlays(self, artifacts: dict[str, ExportResult], frame_paths: list[Path]) -> list[Path]:
        frames = [img for p in frame_paths if (img := cv2.imread(str(p))) is not None]
        if not frames:
            return []
        results = {
            m: run(_required(r, "onnx"), frames, RunConfig(progress=False)).results
            for m, r in artifacts.items()
        }
        from compressor.models.registry import get_spec

        prefix = "overlay"
        return write_overlays(
            frames,
            results["teacher"],
            results["student"],
            self.out / "overlays",
            prefix,
            tuple(get_spec(self.cfg.model).class_names),
        )


def _required(res: ExportResult, kind: str) -> Path:
    path = res.artifact(kind)
    if path is None:
        raise DemoConfigError(f"export of {res.name} produced no {kind} artifact")
    return path


def _val_images(data: Path) -> tuple[str, list[Path]]:
    for sub in ("images/val", "images/100k/val"):
        d = data / sub
        if d.is_dir():
            return str(d), sorted(p for p in d.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    raise DemoConfigError(f"no validation images under {data} (expected images/val)")


def _check_text(summary: dict, kind: str) -> str:
    """One line per artifact: the parity / agreement numbers that vouch for it."""
    if kind == "onnx":
        outs = summary.get("parity", {}).get("outputs", {})
        box, masks = outs.get("det.boxes"), [outs.get(t, {}) for t in ("drivable", "lane")]
        boxes = f"boxes max {box.get('value', float('nan')):.1e} px, " if box else ""
        return f"vs PyTorch: {boxes}mask pixels differing {sum(m.get('value', 0) for m in masks):g}"
    if kind == "onnx_int8":
        q = summary.get("int8", {})
        return (
            f"{q.get('calibration')} calibration, {100 * q.get('quantized_flops_share', 0):.0f}% "
            f"of conv FLOPs in INT8, {len(q.get('fallback', []))} layer group(s) in FP16"
        )
    if kind == "onnx_fp16":
        f = summary.get("fp16", {}).get("onnxruntime", {})
        agree = f.get("mask_agreement_pct", {})
        iou = f.get("mean_iou")
        boxes = f", matched-box IoU mean {iou:.4f}" if iou is not None else ""
        return (
            f"vs FP32: mask agreement {', '.join(f'{k} {v:.2f}%' for k, v in agree.items())}{boxes}"
        )
    return str(summary.get("engine", {}).get("status", ""))


def _artifact_rows(artifacts: dict[str, ExportResult]) -> list[dict]:
    return [
        {
            "model": model,
            "name": Path(a["path"]).name,
            "mb": a.get("size_bytes", 0) / 1e6,
            "check": _check_text(res.summary, a["kind"]),
        }
        for model, res in artifacts.items()
        for a in res.artifacts
        if str(a["path"]).endswith((".onnx", ".engine"))
    ]


def _protocol_text(p: dict) -> str:
    return (
        f"Metrics in percent, deltas in points. Detection: {p.get('det_modes', ['?'])[0]} mode "
        f"(NMS conf 0.001, IoU 0.6, max 300; boxes scored at original resolution). "
        f"Segmentation: {p.get('seg_aggregation', '?')}; lane labels "
        f"{p.get('lane_labels_text', '?')}."
    )


def run_demo(cfg: DemoConfig, log: Callable[[str], None] = print) -> DemoResult:
    """Run every stage, then write <out>/report.md and report.json (+ PNGs, overlays)."""
    import torch

    torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 2) - cfg.workers))
    d = _Demo(cfg, log)
    if cfg.source:  # a wrong --source must fail now, not after synth, train, prune and export
        open_source(cfg.source).close()
    _check_previous_run(Path(cfg.out), cfg.overwrite)
    d.out.mkdir(parents=True, exist_ok=True)
    data = d.stage("data", d.data)
    teacher = d.stage("train teacher", lambda: d.teacher(data))
    comp = d.stage("prune + distill + evaluate", lambda: d.compress(data, teacher))
    arts = {
        "teacher": d.stage("export teacher", lambda: d.export(teacher, "teacher")),
        "student": d.stage(
            "export student",
            lambda: d.export(comp.checkpoint, "student", data if cfg.int8 else None),
        ),
    }
    val_dir, val_paths = _val_images(data)
    latency = d.stage("runtime latency", lambda: d.latency(arts, val_dir))
    source = cfg.source
    if source:
        latency += d.stage(
            "runtime on --source", lambda: d.latency({"student": arts["student"]}, source)
        )
    extra = (
        sorted(Path(cfg.source).glob("*.jpg")) if cfg.source and Path(cfg.source).is_dir() else []
    )
    overlays = d.stage(
        "overlays", lambda: d.overlays(arts, val_paths[: cfg.overlay_frames] + extra)
    )
    report = comp.report
    engine = cfg.resolved_engine()
    payload = {
        "settings": asdict(cfg),
        "imgsz": list(cfg.imgsz),
        "data": {
            "root": str(data),
            "description": "synthetic BDD100K-layout data set" if not cfg.data else f"{data}",
            "note": "Synthetic data: numbers show the pipeline works, they are not a claim about "
            "BDD100K accuracy."
            if not cfg.data
            else "",
        },
        "size": {
            "teacher_params": report["teacher"]["params"],
            "student_params": report["student"]["params"],
            "param_reduction": report["params_reduction"],
            "teacher_gflops": report["teacher"]["flops"] / 1e9,
            "student_gflops": report["student"]["flops"] / 1e9,
            "flops_reduction": report["flops_reduction"],
            "flops_input_hw": report["flops_input_hw"],  # counted here, not at the run's input
        },
        "metrics": {
            "teacher": report["teacher"]["metrics"],
            "student": report["student"]["metrics"],
            "protocol": _protocol_text(report["eval_protocol"]),
        },
        "compress_report": str(comp.paths.get("markdown", "")),
        "artifacts": _artifact_rows(arts),
        "deployed": arts["student"].summary.get("int8"),
        "engine_note": (
            f"TensorRT engines built ({engine})."
            if engine != "none"
            else "No TensorRT on this machine: engines were not built; the ONNX artifacts, "
            "sidecars and a ready trtexec command are in export/."
        ),
        "latency": latency,
        "latency_side_by_side": report.get("latency"),
        "overlays": [str(p) for p in overlays],
        "machine": f"{platform.processor() or platform.machine()}, {platform.system()}",
        "timings": d.timings,
    }
    plot_metrics(
        payload["metrics"]["teacher"], payload["metrics"]["student"], d.out / "metrics.png"
    )
    if latency:
        plot_latency(latency, d.out / "latency.png")
    md, js = write_report(d.out, payload)
    log(f"\nreport: {md}")
    return DemoResult(d.out, md, js, payload)


# Files that show an --out holds a demo run (the synthetic data set alone is reused freely).
_RUN_MARKERS = ("teacher/last.pt", "student/student.pt", "report.json")


def _check_previous_run(out: Path, overwrite: bool) -> None:
    found = next((out / m for m in _RUN_MARKERS if (out / m).is_file()), None)
    if found is not None and not overwrite:
        raise DemoConfigError(
            f"--out {out} already holds a demo run ({found}); pass --overwrite to run it again "
            "there (a synthetic data set in it is reused), or choose another --out"
        )


def with_overrides(cfg: DemoConfig, **kw: Any) -> DemoConfig:
    return replace(cfg, **{k: v for k, v in kw.items() if v is not None})
