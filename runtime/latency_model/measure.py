"""Measure a probe bundle into a latency table: every probe at every width of its grid, then the
whole-model anchors, on one timer. Resumable: progress is saved (atomically) beside the output as
`<table>.partial` and picked up by the next run with the same key and bundle; the table itself is
written only when complete, so an interrupted measurement never leaves a table that looks valid."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime.errors import MtcError
from runtime.fileio import atomic_write_text
from runtime.latency_model.bundle import ProbeBundle, ProbeSpec
from runtime.latency_model.cell_models import (
    detect_block,
    holdout_pairs,
    step_widths,
)
from runtime.latency_model.table import Anchor, LatencyTable, LayerInfo, ProbeTimes, TableKey
from runtime.latency_model.timers import ProbeTimer, Repeat, median_ms

ANCHOR_ROUNDS = 3  # anchors are measured in interleaved rounds: drift hits all of them alike


class MeasureInterrupted(MtcError):
    """Ctrl-C during a measurement: progress was kept and the next run resumes."""


@dataclass(frozen=True)
class MeasureConfig:
    repeat: Repeat = Repeat()
    anchor_repeat: Repeat = Repeat(warmup=1, min_runs=3, min_seconds=0.3, max_runs=20)
    resume: bool = True


def partial_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def table_key(timer: ProbeTimer, model: str, input_hw: tuple[int, int], batch: int) -> TableKey:
    """The key a table measured now on `timer` gets, for a model fingerprint, input and batch."""
    return TableKey(
        backend=timer.name,
        device=timer.device(),
        precision=timer.precision,
        input_hw=input_hw,
        batch=batch,
        model=model,
        versions=tuple(sorted(timer.versions().items())),
        threads=timer.threads,
    )


def _load_partial(path: Path, key: TableKey, digest: str) -> dict[str, Any]:
    fresh: dict[str, Any] = {"key": key.to_dict(), "bundle": digest, "cells": {}}
    if not path.is_file():
        return fresh
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return fresh
    if not isinstance(d, dict) or d.get("key") != key.to_dict() or d.get("bundle") != digest:
        return fresh
    if not isinstance(d.get("cells"), dict):
        return fresh
    return d


def measure_bundle(
    bundle: ProbeBundle,
    timer: ProbeTimer,
    out: str | Path,
    cfg: MeasureConfig | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> LatencyTable:
    """Time every probe cell and anchor of `bundle` on `timer`; write and return the table."""
    cfg = cfg or MeasureConfig()
    out = Path(out)
    key = table_key(timer, bundle.model, bundle.input_hw, bundle.batch)
    ppath = partial_path(out)
    state: dict[str, Any] = (
        _load_partial(ppath, key, bundle.digest())
        if cfg.resume
        else {"key": key.to_dict(), "bundle": bundle.digest(), "cells": {}}
    )
    cells: dict[str, float] = state["cells"]
    resumed = len(cells)
    extra = extra_cells(bundle)
    total = bundle.n_cells + sum(len(v) for v in extra.values())
    total += len(bundle.anchors) * ANCHOR_ROUNDS
    counter = [resumed]

    def step(what: str) -> None:
        counter[0] += 1
        if progress:
            progress(counter[0], total, what)

    t0 = time.perf_counter()
    try:
        _measure_probes(bundle, timer, cfg, state, ppath, step, extra)
        anchors = _measure_anchors(bundle, timer, cfg, step)
    except KeyboardInterrupt:
        atomic_write_text(ppath, json.dumps(state))
        raise MeasureInterrupted(
            f"interrupted after {len(cells)} of {bundle.n_cells} probe timings; they are kept in "
            f"{ppath}: run the same command again to resume (--restart to start over)"
        ) from None
    finally:
        timer.close()
    steps = channel_steps(bundle, cells)
    known = timer.channel_block()
    block = known if known is not None else steps.get("block")
    table = _assemble(bundle, key, cells, anchors)
    table.meta = {
        "bundle": str(bundle.root),
        "seconds": round(time.perf_counter() - t0, 2),
        "resumed_cells": resumed,
        "cells": bundle.n_cells,
        "grid": dict(bundle.grid),
        "channel_block": block,
        "channel_block_from": "backend" if known is not None else "measured (channel_steps)",
        "channel_steps": steps,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "repeat": {
            "warmup": cfg.repeat.warmup,
            "min_runs": cfg.repeat.min_runs,
            "min_seconds": cfg.repeat.min_seconds,
        },
    }
    table.save(out)
    ppath.unlink(missing_ok=True)
    return table


def extra_cells(bundle: ProbeBundle) -> dict[str, list[tuple[int, int]]]:
    """Per probe, the (c_in, c_out) timed besides its grid: held-out pairs on the grid's step
    (which cell model fits, cell_models.holdout_pairs) and, for one probe, the sweep of output
    widths that shows the backend's channel steps (cell_models.step_widths)."""
    grid_step = int(bundle.grid.get("round_to", 8))
    out: dict[str, list[tuple[int, int]]] = {}
    for spec in bundle.probes.values():
        if not spec.depthwise:
            pairs = holdout_pairs(spec.grid_in, spec.grid_out, grid_step)
            out[spec.id] = [(ci, co) for ci, co in pairs]
    sweep = step_probe(bundle)
    if sweep is not None:
        grid = {(ci, co) for _, _, ci, co in sweep.cells()}
        out.setdefault(sweep.id, [])
        out[sweep.id] += [
            (sweep.cin, w)
            for w in step_widths(sweep.cout)
            if (sweep.cin, w) not in grid and (sweep.cin, w) not in out[sweep.id]
        ]
    return {k: v for k, v in out.items() if v}


def step_probe(bundle: ProbeBundle) -> ProbeSpec | None:
    """The probe the channel-step sweep narrows: the widest-input one whose output width may
    change and reaches 64 (a step of 32 needs two blocks to show), heaviest by input pixels."""
    best, size = None, 0
    for spec in bundle.probes.values():
        if spec.depthwise or spec.transposed or len(spec.grid_out) < 2 or spec.cout < 64:
            continue
        h, w = spec_in_hw(bundle, spec)
        if spec.cin * h * w > size:
            best, size = spec, spec.cin * h * w
    return best


def channel_steps(bundle: ProbeBundle, cells: dict[str, float]) -> dict[str, Any]:
    """The sweep's timings and the block they show (cell_models.detect_block)."""
    spec = step_probe(bundle)
    if spec is None:
        return {"block": None, "why": "no probe with an output width of 64 or more to sweep"}
    ms = {w: cells[f"{spec.id}:{spec.cin}x{w}"] for w in step_widths(spec.cout)}
    block, scores = detect_block(ms)
    return {
        "block": block,
        "probe": spec.id,
        "cin": spec.cin,
        "ms": {str(w): round(v, 5) for w, v in ms.items()},
        "scores": {str(b): v for b, v in scores.items()},
    }


def _measure_probes(
    bundle: ProbeBundle,
    timer: ProbeTimer,
    cfg: MeasureConfig,
    state: dict[str, Any],
    ppath: Path,
    step: Callable[[str], None],
    extra: dict[str, list[tuple[int, int]]],
) -> None:
    cells: dict[str, float] = state["cells"]
    last_save = time.perf_counter()
    for spec in bundle.probes.values():
        hw = spec_in_hw(bundle, spec)
        todo = [(ci, co) for _, _, ci, co in spec.cells()] + extra.get(spec.id, [])
        for ci, co in todo:
            cell = f"{spec.id}:{ci}x{co}"
            if cell in cells:
                continue
            data = bundle.probe_bytes(spec, ci, co, fp16=timer.wants_fp16_onnx)
            shape = (bundle.batch, ci, *hw)
            cells[cell] = timer.time(data, bundle.probe_input, shape, cfg.repeat)
            step(spec.id)
            if time.perf_counter() - last_save > 2.0:
                atomic_write_text(ppath, json.dumps(state))
                last_save = time.perf_counter()
    atomic_write_text(ppath, json.dumps(state))


def spec_in_hw(bundle: ProbeBundle, spec: Any) -> tuple[int, int]:
    for ly in bundle.layers.values():
        if ly["probe"] == spec.id:
            return int(ly["in_hw"][0]), int(ly["in_hw"][1])
    raise MtcError(f"probe {spec.id} is used by no layer of the bundle")


def _measure_anchors(
    bundle: ProbeBundle, timer: ProbeTimer, cfg: MeasureConfig, step: Callable[[str], None]
) -> list[Anchor]:
    shape = (bundle.batch, bundle.in_channels, *bundle.input_hw)
    runs = {
        a.name: timer.prepare(
            bundle.anchor_bytes(a, fp16=timer.wants_fp16_onnx), bundle.anchor_input, shape
        )
        for a in bundle.anchors
    }
    samples: dict[str, list[float]] = {a.name: [] for a in bundle.anchors}
    for _ in range(ANCHOR_ROUNDS):
        for a in bundle.anchors:
            samples[a.name].append(median_ms(runs[a.name], cfg.anchor_repeat)[0])
            step(a.name)
    return [
        Anchor(a.name, float(np.median(samples[a.name])), dict(a.widths)) for a in bundle.anchors
    ]


def _assemble(
    bundle: ProbeBundle, key: TableKey, cells: dict[str, float], measured: list[Anchor]
) -> LatencyTable:
    holdout_names = {a.name for a in bundle.anchors if a.role == "holdout"}
    anchors = [a for a in measured if a.name not in holdout_names]
    grid_step = int(bundle.grid.get("round_to", 8))
    probes = {}
    for spec in bundle.probes.values():
        ms = np.full((len(spec.grid_in), len(spec.grid_out)), np.nan)
        for i, j, ci, co in spec.cells():
            ms[i, j] = cells[f"{spec.id}:{ci}x{co}"]
        if spec.depthwise:  # only the diagonal is meaningful: spread it so lookups are 1-D
            diag = {ci: ms[i, j] for i, j, ci, co in spec.cells()}
            for i, ci in enumerate(spec.grid_in):
                for j, co in enumerate(spec.grid_out):
                    ms[i, j] = diag.get(min(ci, co), np.nanmin(ms))
        pairs = [] if spec.depthwise else holdout_pairs(spec.grid_in, spec.grid_out, grid_step)
        held = [(ci, co, cells[f"{spec.id}:{ci}x{co}"]) for ci, co in pairs]
        probes[spec.id] = ProbeTimes(
            list(spec.grid_in), list(spec.grid_out), ms, held, spec.depthwise
        )
    layers = {
        n: LayerInfo(
            probe=str(ly["probe"]),
            cin=int(ly["cin"]),
            cout=int(ly["cout"]),
            out_pixels=int(ly["out_pixels"]),
            vary_in=bool(ly.get("vary_in", True)),
            vary_out=bool(ly.get("vary_out", True)),
        )
        for n, ly in bundle.layers.items()
    }
    holdout = [a for a in measured if a.name in holdout_names]
    return LatencyTable(key, layers, probes, anchors, holdout_anchors=holdout)


class TqdmProgress:
    """A progress callback for measure_bundle that draws a tqdm bar (closed by `close`)."""

    def __init__(self, desc: str = "latency probes", enabled: bool = True) -> None:
        self.desc, self.enabled = desc, enabled
        self._bar: Any = None

    def __call__(self, done: int, total: int, what: str) -> None:
        if not self.enabled:
            return
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=self.desc, unit="probe", initial=done - 1)
        self._bar.update(done - self._bar.n)
        self._bar.set_postfix_str(what, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
