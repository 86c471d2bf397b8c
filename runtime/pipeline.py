"""frames -> preprocess -> backend -> postprocess -> results + latency report.

`load_artifact` turns a path into an open backend (sidecar first: it decides the backend and is
checked against what the artifact really declares). `run` drives a source through it in batches,
warms up explicitly, times every stage, writes overlays and the report, and on Ctrl-C still writes
the partial report before re-raising as `RunInterrupted` (a KeyboardInterrupt carrying the result).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from itertools import islice
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from runtime.backends import Backend, BackendOptions, default_backend, get_backend
from runtime.errors import MtcError
from runtime.hostinfo import NOT_AVAILABLE, jetson_power_mode
from runtime.latency import LatencyRecorder, LatencyReport, RunInfo
from runtime.overlay import OverlaySink, draw_overlay, open_sink
from runtime.postprocess import FrameResult, Postprocessor
from runtime.preprocess import Preprocessor
from runtime.sidecar import SUFFIX_FORMATS, Sidecar, read_sidecar
from runtime.sources import Frame, Source, SourceSpec, open_source


class ArtifactNotFoundError(MtcError):
    """The artifact path does not exist."""


class RunConfigError(MtcError):
    """A run option is out of range or does not fit the artifact."""


@dataclass(frozen=True)
class RunConfig:
    batch: int = 1
    target_fps: float = 30.0
    warmup: int = 2  # batches run (and discarded) on the first batch before measuring
    max_frames: int | None = None
    save: str | None = None  # overlays: a folder, or a .mp4 file
    report: str | None = None  # latency JSON path; .md and .png are written beside it
    progress: bool = True
    keep_results: bool = True  # False for long runs: masks of every frame add up

    def __post_init__(self) -> None:
        checks = [
            ("batch", self.batch >= 1, ">= 1"),
            ("target_fps", self.target_fps > 0, "> 0"),
            ("warmup", self.warmup >= 0, ">= 0"),
            ("max_frames", self.max_frames is None or self.max_frames >= 1, ">= 1"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise RunConfigError(f"{name} must be {rule}, got {getattr(self, name)!r}")


@dataclass
class RunResult:
    results: list[FrameResult]
    report: LatencyReport
    report_files: list[Path] = field(default_factory=list)
    overlays: Path | None = None


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during run(); `.result` holds what was done, and the partial report is written."""

    def __init__(self, result: RunResult) -> None:
        super().__init__("interrupted")
        self.result = result


def load_artifact(
    path: str | os.PathLike[str],
    backend: str = "auto",
    providers: Sequence[str] | str | None = None,
    verify_hash: bool = True,
    memory: str = "auto",
) -> Backend:
    """Open an `.onnx` / `.engine` with the backend its sidecar calls for (or the one named)."""
    p = Path(path)
    if not p.is_file():
        raise ArtifactNotFoundError(
            f"artifact {p} does not exist; pass the .onnx or .engine file that mtc-export wrote"
        )
    sc = read_sidecar(p, verify_hash=verify_hash)
    by_suffix = SUFFIX_FORMATS.get(p.suffix.lower())
    if by_suffix is not None and by_suffix != sc.format:
        raise RunConfigError(f"{p.name} looks like {by_suffix} but its sidecar says {sc.format!r}")
    cls = get_backend(default_backend(sc.format) if backend == "auto" else backend)
    if sc.format not in cls.formats:
        raise RunConfigError(
            f"backend {cls.name!r} runs {', '.join(cls.formats)} artifacts and {p.name} is "
            f"{sc.format!r}; use --backend auto (for ONNX on TensorRT: --providers tensorrt)"
        )
    if isinstance(providers, str):
        providers = [s.strip() for s in providers.split(",") if s.strip()]
    options = BackendOptions(tuple(providers) if providers else None, memory)
    be = cls(p, sc, options).open()
    try:
        _check_input(be, sc)
    except BaseException:
        be.close()
        raise
    return be


def _check_input(be: Backend, sc: Sidecar) -> None:
    spec = be.input_spec
    ours = (spec.name, tuple(spec.shape[1:]), spec.dtype)
    theirs = (sc.input.name, tuple(sc.input.shape[1:]), sc.input.dtype)
    if ours != theirs:
        raise RunConfigError(
            f"{be.path.name} declares input {ours} but its sidecar says {theirs}; re-export the pair"
        )


def run(
    artifact_or_backend: str | os.PathLike[str] | Backend,
    frames: SourceSpec,
    config: RunConfig | None = None,
    **overrides: Any,
) -> RunResult:
    """Run frames through an artifact. `overrides` are RunConfig fields (`batch=4`, `save=...`)."""
    unknown = set(overrides) - {f.name for f in fields(RunConfig)}
    if unknown:
        raise RunConfigError(
            f"unknown run option {sorted(unknown)[0]!r}; valid: "
            f"{', '.join(f.name for f in fields(RunConfig))}"
        )
    cfg = replace(config or RunConfig(), **overrides)
    if isinstance(artifact_or_backend, Backend):
        be, opened_here = artifact_or_backend, not artifact_or_backend.is_open
    else:
        be, opened_here = load_artifact(artifact_or_backend), True
    try:
        if not be.is_open:
            be.open()
        with open_source(frames) as source:
            return _Runner(be, source, cfg).run()
    finally:
        if opened_here:
            be.close()


def _batched(frames: Iterable[Frame], n: int) -> Iterator[list[Frame]]:
    it = iter(frames)
    while chunk := list(islice(it, n)):
        yield chunk


class _Runner:
    def __init__(self, backend: Backend, source: Source, cfg: RunConfig) -> None:
        if backend.sidecar is None:
            raise RunConfigError("the backend has no sidecar; create it with load_artifact()")
        self.be, self.source, self.cfg, self.sc = backend, source, cfg, backend.sidecar
        spec = backend.input_spec
        if spec.batch_max is not None and cfg.batch > spec.batch_max:
            raise RunConfigError(
                f"--batch {cfg.batch} exceeds what {backend.path.name} accepts (max "
                f"{spec.batch_max}); use --batch {spec.batch_max} or rebuild with a larger profile"
            )
        self.post = Postprocessor(self.sc)
        self.post.check_outputs(backend.output_names)
        self.pre = Preprocessor(self.sc.preprocess, cfg.batch, spec.dtype)
        self.recorder = LatencyRecorder()
        self.results: list[FrameResult] = []
        self.processed = 0

    def run(self) -> RunResult:
        sink = (
            open_sink(self.cfg.save, self.source.fps or self.cfg.target_fps)
            if self.cfg.save
            else None
        )
        frames = islice(self.source, self.cfg.max_frames)
        total = _min_known(self.source.length, self.cfg.max_frames)
        bar = tqdm(total=total, unit="frame", disable=not self.cfg.progress, desc="mtc-run")
        start, interrupted = time.perf_counter(), False
        try:
            for i, chunk in enumerate(_batched(frames, self.cfg.batch)):
                if i == 0:
                    for _ in range(self.cfg.warmup):
                        self._process(chunk)
                self._step(chunk, sink)
                bar.update(len(chunk))
            reason = self.source.stop_reason
            if self.cfg.max_frames is not None and self.processed >= self.cfg.max_frames:
                reason = f"reached --max-frames {self.cfg.max_frames}"
        except KeyboardInterrupt:
            interrupted, reason = True, "interrupted (Ctrl-C)"
        finally:
            bar.close()
            if sink is not None:
                sink.close()
        result = self._finish(reason, time.perf_counter() - start, sink)
        if interrupted:
            raise RunInterrupted(result)
        return result

    def _step(self, chunk: list[Frame], sink: OverlaySink | None) -> None:
        results, stage_ms = self._process(chunk)
        self.recorder.add([r.frame_id for r in results], stage_ms)
        self.processed += len(results)
        if sink is not None:
            names = self.sc.det.class_names if self.sc.det else ()
            for (_, img), r in zip(chunk, results):
                sink.write(r.frame_id, draw_overlay(img, r, class_names=names))
        if self.cfg.keep_results:
            self.results.extend(results)

    def _process(self, chunk: list[Frame]) -> tuple[list[FrameResult], dict[str, float]]:
        t0 = time.perf_counter()
        batch, boxes = self.pre([img for _, img in chunk])
        t1 = time.perf_counter()
        outputs = self.be.infer(batch)
        t2 = time.perf_counter()
        results = self.post(outputs, boxes, [fid for fid, _ in chunk])
        t3 = time.perf_counter()
        ms = {"preprocess": (t1 - t0) * 1e3, **self.be.last_timing}
        ms.update(infer=(t2 - t1) * 1e3, postprocess=(t3 - t2) * 1e3, end_to_end=(t3 - t0) * 1e3)
        for r in results:
            r.timing.update(ms)
        return results, ms

    def _finish(self, reason: str, wall_s: float, sink: OverlaySink | None) -> RunResult:
        versions = {**self.be.versions(), "numpy": np.__version__, "opencv": cv2.__version__}
        info = RunInfo(
            artifact=self.be.path.name,
            backend=self.be.name,
            device=self.be.device,
            precision=self.sc.precision,
            batch=self.cfg.batch,
            target_fps=self.cfg.target_fps,
            warmup_batches=self.cfg.warmup,
            tensorrt_version=self.sc.tensorrt.version if self.sc.tensorrt else NOT_AVAILABLE,
            power_mode=jetson_power_mode(),
            versions=versions,
            source=f"{self.source.kind}: {self.source.spec}"
            if self.source.kind != "arrays"
            else "arrays (Python)",
            frames_processed=self.processed,
            frames_skipped=self.source.frames_skipped,
            stop_reason=reason,
            wall_s=wall_s,
        )
        report = LatencyReport.build(info, self.recorder)
        files = report.write(self.cfg.report) if self.cfg.report else []
        return RunResult(self.results, report, files, sink.path if sink else None)


def _min_known(*values: int | None) -> int | None:
    known = [v for v in values if v is not None]
    return min(known) if known else None
