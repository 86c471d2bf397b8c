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
from runtime.latency_model.bundle import ProbeBundle
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
    total = bundle.n_cells + len(bundle.anchors) * ANCHOR_ROUNDS
    counter = [resumed]

    def step(what: str) -> None:
        counter[0] += 1
        if progress:
            progress(counter[0], total, what)

    block = timer.channel_block()
    t0 = time.perf_counter()
    try:
        _measure_probes(bundle, timer, cfg, state, ppath, step)
        anchors = _measure_anchors(bundle, timer, cfg, step)
    except KeyboardInterrupt:
        atomic_write_text(ppath, json.dumps(state))
        raise MeasureInterrupted(
            f"interrupted after {len(cells)} of {bundle.n_cells} probe timings; they are kept in "
            f"{ppath}: run the same command again to resume (--restart to start over)"
        ) from None
    finally:
        timer.close()
    table = _assemble(bundle, key, cells, anchors)
    table.meta = {
        "bundle": str(bundle.root),
        "seconds": round(time.perf_counter() - t0, 2),
        "resumed_cells": resumed,
        "cells": bundle.n_cells,
        "grid": dict(bundle.grid),
        "channel_block": block,
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


def _measure_probes(
    bundle: ProbeBundle,
    timer: ProbeTimer,
    cfg: MeasureConfig,
    state: dict[str, Any],
    ppath: Path,
    step: Callable[[str], None],
) -> None:
    cells: dict[str, float] = state["cells"]
    last_save = time.perf_counter()
    for spec in bundle.probes.values():
        hw = spec_in_hw(bundle, spec)
        for _, _, ci, co in spec.cells():
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
    bundle: ProbeBundle, key: TableKey, cells: dict[str, float], anchors: list[Anchor]
) -> LatencyTable:
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
        probes[spec.id] = ProbeTimes(list(spec.grid_in), list(spec.grid_out), ms)
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
    return LatencyTable(key, layers, probes, anchors)


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
