"""Latency tables where the compression runs: load a table measured on the deploy machine and
check it fits, or measure one here on ONNX Runtime CPU (cached per model, backend, versions,
precision, input size, batch and threads); and time whole models side by side, interleaved, which
is how a pruned model's predicted latency is checked against its measured one."""

from __future__ import annotations

import os
import statistics
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from compressor.latency.onnx_io import INPUT_NAME, export_onnx
from compressor.latency.probes import export_probe_bundle, fingerprint, probed_layers
from compressor.pruning.config import resolve_round_to
from compressor.pruning.pruner import round_to_for_table
from runtime.errors import MtcError
from runtime.latency_model.bundle import load_bundle
from runtime.latency_model.measure import MeasureConfig, measure_bundle, table_key
from runtime.latency_model.table import (
    LatencyTable,
    LatencyTableMismatchError,
    load_table,
    split_block,
)
from runtime.latency_model.timers import Repeat, get_timer, median_ms

LOCAL_BACKENDS = ("onnxruntime",)
CACHE_TAG = "h2"  # tables with held-out cells and the step sweep (older cache files are not read)


def cache_dir() -> Path:
    """$MTC_CACHE_DIR, else $XDG_CACHE_HOME/mtc, else ~/.cache/mtc."""
    if os.environ.get("MTC_CACHE_DIR"):
        return Path(os.environ["MTC_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mtc"


def model_fingerprint(
    model: nn.Module, input_hw: tuple[int, int], batch: int, in_channels: int = 3
) -> str:
    return fingerprint(probed_layers(model, input_hw, in_channels), input_hw, batch)


def check_key(
    table: LatencyTable,
    source: str,
    *,
    backend: str | None,
    precision: str | None,
    device: str | None,
    input_hw: tuple[int, int],
    batch: int,
) -> None:
    """Refuse a table measured for another backend, precision, device, input size or batch."""
    diffs = table.key.mismatches(
        backend=backend, precision=precision, device=device, input_hw=input_hw, batch=batch
    )
    if diffs:
        raise LatencyTableMismatchError(
            f"{source} does not fit this compression: {'; '.join(diffs)}; measure a table for "
            "it (mtc-probes, then mtc-latency on the deploy machine)"
        )


def obtain_table(
    model: nn.Module,
    input_hw: tuple[int, int],
    batch: int = 1,
    *,
    table_path: str | None = None,
    backend: str = "onnxruntime",
    precision: str | None = None,
    device: str | None = None,
    threads: int | None = None,
    protected: Sequence[str] = (),
    protect_outputs: bool = True,
    round_to: int | str | None = None,
    min_width: int = 8,
    cache: Path | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    log: Callable[[str], None] = print,
) -> LatencyTable:
    """The table to prune `model` against: `table_path` (checked) or one measured here, probed
    on the grid of `round_to` (None / "auto": this backend's channel block, resolve_round_to)."""
    if table_path:
        table = load_table(table_path)
        check_key(
            table,
            f"latency table {table_path}",
            backend=backend,
            precision=precision,
            device=device,
            input_hw=input_hw,
            batch=batch,
        )
        round_to_for_table(round_to, table)  # 'auto' without a block, another grid: refused now
        block_hint(table, round_to, log)
        return table
    if backend not in LOCAL_BACKENDS:
        raise LatencyTableMismatchError(
            f"a {backend} latency table must be measured on the machine that runs the model: "
            f"export probes there with mtc-probes, time them with mtc-latency --backend {backend}, "
            "and pass the table with --latency-table"
        )
    timer = get_timer(backend)(precision or "fp32", threads)
    round_to, _ = resolve_round_to(
        round_to, timer.channel_block(), f"{backend} on {timer.device()}"
    )
    fp = model_fingerprint(model, input_hw, batch)
    h, w = input_hw
    where = (cache or cache_dir()) / "latency"
    # the probe grid follows round_to / min_width: a table for one grid is not reused for another
    grid = f"r{round_to}m{min_width}_{CACHE_TAG}"
    path = where / f"{fp}_{backend}_{timer.precision}_{h}x{w}_b{batch}_t{threads or 0}_{grid}.json"
    if path.is_file():
        try:
            table = load_table(path)
        except MtcError:  # a damaged cache file is re-measured, never trusted
            table = None
        if table is not None:
            expected = table_key(timer, fp, input_hw, batch)
            if table.key == expected:
                log(f"latency table: reusing {path}")
                timer.close()
                block_hint(table, round_to, log)
                return table
            log(f"latency table: {path} was measured with other versions or device; re-measuring")
    with tempfile.TemporaryDirectory(prefix="mtc-probes-") as d:
        log(f"latency table: exporting probes of {type(model).__name__} at {w}x{h}, batch {batch}")
        export_probe_bundle(
            model,
            d,
            input_hw,
            batch,
            protected=protected,
            protect_outputs=protect_outputs,
            round_to=round_to,
            min_width=min_width,
        )
        bundle = load_bundle(d)
        log(
            f"latency table: timing {bundle.n_cells} probe widths of {len(bundle.probes)} probes + "
            f"{len(bundle.anchors)} whole models on {backend} ({timer.device()})"
        )
        table = measure_bundle(bundle, timer, path, MeasureConfig(), progress=progress)
    block_hint(table, round_to, log)
    return table


def block_hint(
    table: LatencyTable, round_to: int | str | None, log: Callable[[str], None]
) -> str | None:
    """Say so when the plan's round_to splits the backend's channel blocks: a width between
    two multiples of the block costs as much as the next multiple up, so the plan would pay
    for channels it removed (the table, measured on its grid, cannot see the steps)."""
    block = split_block(table.meta.get("channel_block"), round_to)
    if block is None:
        return None
    msg = (
        f"latency table: {table.key.backend} on {table.key.device} computes convolutions in "
        f"blocks of {block} channels; widths on round_to {round_to} between two blocks cost "
        f"as much as the next block up: round_to {block} (--round-to {block}) plans widths this "
        "backend can use (docs/LATENCY.md)"
    )
    log(msg)
    return msg


def measure_models(
    models: dict[str, nn.Module],
    input_hw: tuple[int, int],
    batch: int = 1,
    *,
    threads: int | None = None,
    rounds: int = 7,
    repeat: Repeat | None = None,
    in_channels: int = 3,
) -> dict[str, dict[str, Any]]:
    """Median ms per batch of each model on ONNX Runtime CPU, measured interleaved: every round
    times each model once (a median of a few runs), so load changes hit all of them alike."""
    timer = get_timer("onnxruntime")("fp32", threads)
    repeat = repeat or Repeat(warmup=2, min_runs=3, min_seconds=0.2, max_runs=30)
    shape = (batch, in_channels, *input_hw)
    runs = {
        name: timer.prepare(
            export_onnx(m, input_hw, batch, in_channels).SerializeToString(), INPUT_NAME, shape
        )
        for name, m in models.items()
    }
    samples: dict[str, list[float]] = {n: [] for n in models}
    for _ in range(rounds):
        for name, run in runs.items():
            samples[name].append(median_ms(run, repeat)[0])
    return {
        n: {
            "median_ms": round(statistics.median(v), 4),
            "rounds_ms": [round(x, 4) for x in v],
            "backend": "onnxruntime",
            "device": timer.device(),
            "threads": threads,
            "batch": batch,
            "input_hw": list(input_hw),
        }
        for n, v in samples.items()
    }


def plan_measurer(
    teacher: nn.Module,
    table: LatencyTable,
    *,
    rounds: int = 3,
    log: Callable[[str], None] = print,
) -> Callable[[nn.Module], float]:
    """measure(candidate) -> the candidate's ms on the table's scale: it is timed interleaved
    with the teacher and scaled by table-teacher / teacher-now, so load drift since the table
    was measured cancels out. Only for tables of a backend on this machine."""
    key = table.key
    full_ms = table.anchors[0].ms

    def measure(candidate: nn.Module) -> float:
        res = measure_models(
            {"teacher": teacher, "candidate": candidate},
            key.input_hw,
            key.batch,
            threads=key.threads,
            rounds=rounds,
        )
        t, c = res["teacher"]["median_ms"], res["candidate"]["median_ms"]
        log(f"latency plan check: candidate {c:.2f} ms vs teacher {t:.2f} ms ({c / t:.3f}x)")
        return c * full_ms / t

    return measure


def is_local(table: LatencyTable) -> bool:
    """True when the table's backend and device are this machine's (plans can be measured)."""
    if table.key.backend not in LOCAL_BACKENDS:
        return False
    timer = get_timer(table.key.backend)(table.key.precision, table.key.threads)
    try:
        return timer.device() == table.key.device and dict(table.key.versions) == timer.versions()
    finally:
        timer.close()
