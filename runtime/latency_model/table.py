"""The latency table: what one deploy backend takes to run each layer of one model, as a function
of the widths the layer keeps, plus whole-model anchors that calibrate the rest.

Model of a network's latency at widths w (per layer: kept input and output channels):

    T(w) = a + b * V(w) + sum over layers of t_layer(c_in, c_out)

t_layer is the layer's probe (its conv and the activation fused behind it, exactly as exported)
timed alone on a grid of (c_in, c_out) and read with the cell model (one- or two-dimensional,
cell_models) that predicted held-out cells best. What the probes do not see —
concatenations, upsampling, pooling, per-op overhead — is `a + b * V(w)`, with V the activation
volume (sum of c_out x output pixels) of the probed layers: a width-proportional part and a fixed
part, fitted on two whole models measured in the same session (the unpruned model and a uniformly
thinned one). Both anchors are reproduced exactly. Isolated probes overstate what a non-uniform
cut saves inside the model (layout changes between neighbours, caches), so where the backend is at
hand the planner also measures the pruned models it proposes and adds them as anchors; their
measured savings calibrate one factor kappa on the predicted savings:

    predicted(w) = T(full) - kappa * (T(full) - T(w))      (kappa = 1 without such anchors)

The file is JSON, keyed by everything that changes a timing: backend, device, library versions,
precision, input size, batch, threads and the model's layer fingerprint. A table is refused (with
what differs) when any of them does not match the use it is put to."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtime.errors import MtcError
from runtime.fileio import atomic_write_text
from runtime.latency_model.cell_models import (
    DEFAULT_MODEL,
    MODELS,
    cell_ms,
    choose_model,
    model_errors,
)

TABLE_FORMAT = "mtc-latency-table"
TABLE_VERSION = 1

Widths = Mapping[str, tuple[int, int]]


class LatencyTableError(MtcError):
    """A latency table file that cannot be read or does not describe this model."""


class LatencyTableMismatchError(LatencyTableError):
    """A table measured for another backend, device, precision, input size, batch or model."""


@dataclass(frozen=True)
class TableKey:
    """Everything a timing depends on. `model` is the fingerprint of the probed layers (names and
    shapes), so a table never silently applies to another architecture or input size."""

    backend: str
    device: str
    precision: str
    input_hw: tuple[int, int]
    batch: int
    model: str
    versions: tuple[tuple[str, str], ...] = ()
    threads: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_hw"] = list(self.input_hw)
        d["versions"] = dict(self.versions)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TableKey:
        try:
            hw = tuple(int(v) for v in d["input_hw"])
            return cls(
                backend=str(d["backend"]),
                device=str(d["device"]),
                precision=str(d["precision"]),
                input_hw=(hw[0], hw[1]),
                batch=int(d["batch"]),
                model=str(d["model"]),
                versions=tuple(sorted((str(k), str(v)) for k, v in dict(d["versions"]).items())),
                threads=None if d.get("threads") is None else int(d["threads"]),
            )
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise LatencyTableError(f"latency table key is malformed ({e!r}): {dict(d)}") from None

    def mismatches(self, **expected: Any) -> list[str]:
        """'field: table has X, expected Y' for every given field that differs. `device` matches
        when the expected text is contained in the table's (e.g. 'Orin' in 'Jetson AGX Orin')."""
        out = []
        for name, want in expected.items():
            if want is None:
                continue
            have = getattr(self, name)
            if name == "input_hw":
                want = tuple(int(v) for v in want)
            if name == "versions":
                want = tuple(sorted(dict(want).items()))
            ok = str(want).lower() in str(have).lower() if name == "device" else have == want
            if not ok:
                shown_have = dict(have) if name == "versions" else have
                shown_want = dict(want) if name == "versions" else want
                out.append(f"{name}: table has {shown_have}, expected {shown_want}")
        return out


@dataclass
class LayerInfo:
    """One probed layer of the model: its probe, its full widths and its output pixels."""

    probe: str
    cin: int
    cout: int
    out_pixels: int
    vary_in: bool = True
    vary_out: bool = True


@dataclass
class ProbeTimes:
    """Median milliseconds per batch of one probe on a grid of (c_in, c_out), plus held-out
    cells [(c_in, c_out, ms)] off the grid that decide which cell model the table uses."""

    grid_in: list[int]
    grid_out: list[int]
    ms: np.ndarray  # [len(grid_in), len(grid_out)]
    holdout: list[tuple[int, int, float]] = field(default_factory=list)
    depthwise: bool = False  # one width: always read on the (spread) diagonal, bilinearly
    model: str = DEFAULT_MODEL

    def at(self, cin: float, cout: float, model: str | None = None) -> float:
        use = "bilinear" if self.depthwise else (model or self.model)
        return cell_ms(use, self.grid_in, self.grid_out, self.ms, cin, cout)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "grid_in": list(self.grid_in),
            "grid_out": list(self.grid_out),
            "ms": [[round(float(v), 5) for v in row] for row in self.ms],
        }
        if self.holdout:
            d["holdout"] = [[int(ci), int(co), round(float(ms), 5)] for ci, co, ms in self.holdout]
        if self.depthwise:
            d["depthwise"] = True
        return d


@dataclass
class Anchor:
    """A whole model measured in the same session: its widths (absent layer = full width;
    (0, 0) = removed with its block)."""

    name: str
    ms: float
    widths: dict[str, tuple[int, int]] = field(default_factory=dict)


@dataclass
class LatencyTable:
    key: TableKey
    layers: dict[str, LayerInfo]
    probes: dict[str, ProbeTimes]
    anchors: list[Anchor]
    meta: dict[str, Any] = field(default_factory=dict)
    holdout_anchors: list[Anchor] = field(default_factory=list)  # pruned nets, never fitted

    def __post_init__(self) -> None:
        missing = sorted({ly.probe for ly in self.layers.values()} - set(self.probes))
        if missing:
            raise LatencyTableError(
                f"latency table lacks the timings of probe(s) {', '.join(missing[:5])}: it was "
                "not measured to the end; measure it again with mtc-latency"
            )
        if not self.anchors:
            raise LatencyTableError("latency table has no whole-model anchor: measure it again")
        self.cell_model = self._choose_model()
        for p in self.probes.values():
            p.model = self.cell_model["model"]
        self.fixed_ms, self.per_volume_ms = self._fit_rest()
        self.savings_scale = self._fit_scale()

    # -- prediction ------------------------------------------------------------------------------
    def full_widths(self) -> dict[str, tuple[int, int]]:
        return {n: (ly.cin, ly.cout) for n, ly in self.layers.items()}

    def layer_ms(self, name: str, cin: int, cout: int, model: str | None = None) -> float:
        """A layer's time at (cin, cout); width 0 = a layer that was removed (depth pruning)."""
        ly = self.layers[name]
        if cout == 0:
            return 0.0
        return self.probes[ly.probe].at(cin if ly.vary_in else ly.cin, cout, model)

    def _parts(self, widths: Widths, model: str | None = None) -> tuple[float, float]:
        """(sum of probe times, activation volume) at `widths`."""
        total, volume = 0.0, 0.0
        for name, ly in self.layers.items():
            cin, cout = widths.get(name, (ly.cin, ly.cout))
            total += self.layer_ms(name, cin, cout, model)
            volume += cout * ly.out_pixels
        return total, volume

    def _choose_model(self) -> dict[str, Any]:
        """The cell model with the least error on the held-out cells (each probe weighted by the
        layers that use it), and every model's error on the held-out whole networks."""
        uses: dict[str, int] = {}
        for ly in self.layers.values():
            uses[ly.probe] = uses.get(ly.probe, 0) + 1
        cells = [
            (pid, ci, co, ms, uses.get(pid, 0))
            for pid, p in self.probes.items()
            for ci, co, ms in p.holdout
        ]
        predict = {m: (lambda pid, ci, co, m=m: self.probes[pid].at(ci, co, m)) for m in MODELS}
        errors = model_errors(cells, predict) if cells else {}
        networks = {
            m: [
                round(self.predict_uncalibrated(h.widths, m) / h.ms - 1, 5)
                for h in self.holdout_anchors
            ]
            for m in MODELS
        }
        return {
            "model": choose_model(errors),
            "chosen_by": "held-out cells" if errors else "default (no held-out cells measured)",
            "holdout_cells": len(cells),
            "cell_error": errors,
            "network_error": {m: e for m, e in networks.items() if e},
        }

    def _fit_rest(self, model: str | None = None) -> tuple[float, float]:
        """(a, b) through the first two anchors (the model and its uniformly thinned copy)."""
        (s0, v0), t0 = self._parts(self.anchors[0].widths, model), self.anchors[0].ms
        slope = 0.0
        if len(self.anchors) > 1:
            (s1, v1), t1 = self._parts(self.anchors[1].widths, model), self.anchors[1].ms
            if v1 != v0:
                slope = max(0.0, ((t1 - s1) - (t0 - s0)) / (v1 - v0))
        return t0 - s0 - slope * v0, slope

    def _structural(self, widths: Widths) -> float:
        s, v = self._parts(widths)
        return self.fixed_ms + self.per_volume_ms * v + s

    def _fit_scale(self) -> float:
        """kappa = measured / structurally predicted savings, least squares over the anchors
        after the first two (pruned models measured while planning); 1 without any."""
        full = self.anchors[0].ms
        num = den = 0.0
        for a in self.anchors[2:]:
            predicted_saving = full - self._structural(a.widths)
            num += predicted_saving * (full - a.ms)
            den += predicted_saving**2
        if den <= 0:
            return 1.0
        return float(min(2.0, max(0.25, num / den)))

    def predict(self, widths: Widths | None = None) -> float:
        """Milliseconds per batch of the model at `widths` (layer -> (c_in, c_out))."""
        full = self.anchors[0].ms
        return full - self.savings_scale * (full - self._structural(widths or {}))

    def predict_uncalibrated(self, widths: Widths, model: str | None = None) -> float:
        """The prediction before any measured plan recalibrates it (kappa = 1), with `model`'s
        cells (default: the chosen one) and its own fit of the rest: for comparing models."""
        a, b = self._fit_rest(model)
        s_, v = self._parts(widths, model)
        return a + b * v + s_

    def add_anchor(self, anchor: Anchor) -> None:
        """A pruned model measured on this backend: recalibrate the savings scale with it."""
        self.anchors.append(anchor)
        self.savings_scale = self._fit_scale()

    def breakdown(self, widths: Widths | None = None) -> dict[str, float]:
        """Per-layer probe time (ms) at `widths`, for reports."""
        widths = widths or {}
        return {
            n: self.layer_ms(n, *widths.get(n, (ly.cin, ly.cout))) for n, ly in self.layers.items()
        }

    def check_layers(self, expected: Mapping[str, tuple[int, int]]) -> None:
        """Every layer the caller will price must be in the table with the same full widths."""
        for name, (cin, cout) in expected.items():
            ly = self.layers.get(name)
            if ly is None:
                raise LatencyTableMismatchError(
                    f"latency table has no timing for layer {name!r} of this model: it was "
                    "measured for another model; export probes of this one (mtc-probes) and "
                    "measure them"
                )
            if (ly.cin, ly.cout) != (cin, cout):
                raise LatencyTableMismatchError(
                    f"layer {name!r} is {cin}->{cout} channels in this model but "
                    f"{ly.cin}->{ly.cout} in the latency table: the table belongs to another model"
                )

    # -- files -----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": TABLE_FORMAT,
            "version": TABLE_VERSION,
            "key": self.key.to_dict(),
            "layers": {n: asdict(ly) for n, ly in self.layers.items()},
            "probes": {p: t.to_dict() for p, t in self.probes.items()},
            "anchors": [_anchor_to_dict(a) for a in self.anchors],
            "holdout_anchors": [_anchor_to_dict(a) for a in self.holdout_anchors],
            "cell_model": self.cell_model,
            "fit": {
                "fixed_ms": round(self.fixed_ms, 5),
                "per_volume_ms": self.per_volume_ms,
                "savings_scale": round(self.savings_scale, 6),
            },
            "meta": self.meta,
        }

    def save(self, path: str | Path) -> Path:
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "latency table") -> LatencyTable:
        if not isinstance(d, Mapping) or d.get("format") != TABLE_FORMAT:
            raise LatencyTableError(
                f"{source} is not an mtc latency table (expected format {TABLE_FORMAT!r}); make "
                "one with mtc-latency"
            )
        if d.get("version") != TABLE_VERSION:
            raise LatencyTableError(
                f"{source} has table version {d.get('version')!r}, this mtc reads version "
                f"{TABLE_VERSION}: measure it again with this version's mtc-latency"
            )
        try:
            return cls(
                key=TableKey.from_dict(d["key"]),
                layers={n: LayerInfo(**ly) for n, ly in d["layers"].items()},
                probes={p: _probe_from_dict(t) for p, t in d["probes"].items()},
                anchors=[_anchor_from_dict(a) for a in d["anchors"]],
                meta=dict(d.get("meta", {})),
                holdout_anchors=[_anchor_from_dict(a) for a in d.get("holdout_anchors", [])],
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise LatencyTableError(f"{source} is malformed ({type(e).__name__}: {e})") from None


def _probe_from_dict(t: Mapping[str, Any]) -> ProbeTimes:
    ms = np.asarray(t["ms"], dtype=np.float64)
    gi, go = [int(v) for v in t["grid_in"]], [int(v) for v in t["grid_out"]]
    if ms.shape != (len(gi), len(go)) or not np.all(np.isfinite(ms)):
        raise ValueError(f"probe timings of shape {ms.shape} do not fit grid {len(gi)}x{len(go)}")
    if gi != sorted(set(gi)) or go != sorted(set(go)):
        raise ValueError("probe grid widths must be strictly increasing")
    holdout = [(int(ci), int(co), float(v)) for ci, co, v in t.get("holdout", [])]
    return ProbeTimes(gi, go, ms, holdout, bool(t.get("depthwise", False)))


def _anchor_to_dict(a: Anchor) -> dict[str, Any]:
    return {
        "name": a.name,
        "ms": round(a.ms, 5),
        "widths": {k: list(v) for k, v in a.widths.items()},
    }


def _anchor_from_dict(a: Mapping[str, Any]) -> Anchor:
    widths = {str(k): (int(v[0]), int(v[1])) for k, v in dict(a.get("widths", {})).items()}
    ms = float(a["ms"])
    if not math.isfinite(ms) or ms <= 0:
        raise ValueError(f"anchor {a.get('name')!r} has latency {ms}")
    return Anchor(str(a["name"]), ms, widths)


def load_table(path: str | Path) -> LatencyTable:
    p = Path(path)
    if not p.is_file():
        what = "a folder" if p.is_dir() else "missing"
        raise LatencyTableError(
            f"latency table {p} is {what}; expected a JSON file from mtc-latency"
        )
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LatencyTableError(f"latency table {p} is not JSON ({e.__class__.__name__})") from None
    return LatencyTable.from_dict(data, source=f"latency table {p}")


def grid_widths(full: int, fractions: Iterable[float], round_to: int, low: int) -> list[int]:
    """Probe widths of a layer of `full` channels: each fraction of it rounded to `round_to`,
    plus the smallest width a pruned layer may keep (`low`), clipped to [1, full]."""
    vals = {full, min(full, max(1, low))}
    for f in fractions:
        w = int(round(f * full / round_to)) * round_to
        vals.add(min(full, max(w, min(full, low))))
    return sorted(vals)


def split_block(channel_block: Any, round_to: Any) -> int | None:
    """The backend's channel block when widths on steps of `round_to` fall between its
    multiples (such a width costs as much as the next multiple up); None when they do not, or
    when either is unknown."""
    if not isinstance(channel_block, int) or channel_block <= 1 or not isinstance(round_to, int):
        return None
    return channel_block if round_to % channel_block else None


def check_grid(table: LatencyTable, round_to: int) -> None:
    """Refuse to plan widths on steps of `round_to` against a table probed on a grid whose step
    does not divide it: the plan's widths fall between the measured ones, where the table can
    only guess (and a backend's channel blocks make such widths cost the next step up)."""
    step = (table.meta.get("grid") or {}).get("round_to")
    if isinstance(step, int) and step > 1 and round_to % step:
        raise LatencyTableMismatchError(
            f"the latency table was probed on a grid of {step} channels, but this plan keeps "
            f"widths on steps of {round_to}, between the measured ones: plan with a multiple of "
            f"{step} (--round-to {step}), or export the probes with mtc-probes --round-to "
            f"{round_to} and measure them again"
        )
