"""Latency model of a deploy backend (torch-free): probe bundles exported on the torch side are
timed here, on the machine that will run the model, into a latency table that the pruner
(`mtc-compress --target latency`) plans against.

bundle (probes.json + probe ONNX) -> measure (a timer per backend) -> LatencyTable (a file keyed
by backend, device, versions, precision, input size, batch and model) -> predict(widths)."""

from __future__ import annotations

from runtime.latency_model.table import (
    LatencyTable,
    LatencyTableError,
    LatencyTableMismatchError,
    TableKey,
    load_table,
)

__all__ = [
    "LatencyTable",
    "LatencyTableError",
    "LatencyTableMismatchError",
    "TableKey",
    "load_table",
]
