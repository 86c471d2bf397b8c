"""The pruning report: params and FLOPs before/after, target vs achieved, per-layer widths,
frozen groups with their reasons, per-step calibration facts; as a dict (JSON), Markdown and a
PNG of per-layer widths."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from runtime.fileio import atomic_path


@dataclass
class StepReport:
    step: int
    target_ratio: float
    params: int
    macs: int
    predicted_params: int
    groups_pruned: int
    channels_removed: int
    calib_batches: int
    tasks: list[str]
    mean_losses: dict[str, float]
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    predicted_ms: float | None = None
    blocks_removed: int = 0
    importance_lost: float | None = None  # the latency plan's objective (sum of removed scores)


@dataclass
class PruneReport:
    importance: str
    target: str
    target_ratio: float
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    flops_input_hw: list[int]
    widths: list[dict]  # {"layer", "type", "before", "after"} in model order (conv/linear outs)
    frozen: list[dict]
    steps: list[StepReport] = field(default_factory=list)
    groups_total: int = 0
    seconds: float = 0.0
    latency: dict | None = None  # table key, predicted ms before/after, per-layer savings
    round_to: dict | None = None  # {"value", "setting", "source"}: the width step the plan used
    depth: dict | None = None  # depth pruning: removed blocks (importance, saved ms) and kept ones

    @property
    def params_ratio(self) -> float:
        return 1.0 - self.params_after / max(1, self.params_before)

    @property
    def flops_ratio(self) -> float:
        return 1.0 - self.macs_after / max(1, self.macs_before)

    @property
    def latency_ratio(self) -> float | None:
        if not self.latency:
            return None
        return 1.0 - self.latency["predicted_after_ms"] / self.latency["predicted_before_ms"]

    @property
    def achieved_ratio(self) -> float:
        if self.target == "latency" and self.latency_ratio is not None:
            return self.latency_ratio
        return self.params_ratio if self.target == "params" else self.flops_ratio

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(
            params_ratio=round(self.params_ratio, 6),
            flops_ratio=round(self.flops_ratio, 6),
            achieved_ratio=round(self.achieved_ratio, 6),
            flops_before=2 * self.macs_before,
            flops_after=2 * self.macs_after,
        )
        return d

    def to_markdown(self) -> str:
        h, w = self.flops_input_hw
        changed = [r for r in self.widths if r["before"] != r["after"]]
        lines = [
            f"Importance **{self.importance}**, target: remove {self.target_ratio:.1%} of "
            f"{self.target}; achieved {self.achieved_ratio:.2%}.",
            "",
            "| | before | after | change |",
            "|---|---:|---:|---:|",
            f"| parameters | {self.params_before:,} | {self.params_after:,} | "
            f"{-self.params_ratio:+.2%} |",
            f"| GFLOPs @ {w}x{h} | {2 * self.macs_before / 1e9:.3f} | "
            f"{2 * self.macs_after / 1e9:.3f} | {-self.flops_ratio:+.2%} |",
            *self._latency_rows(),
            *self._round_to_line(),
            "",
            f"{len(changed)} of {len(self.widths)} conv/linear layers narrowed; "
            f"{len(self.frozen)} channel groups left untouched of {self.groups_total + len(self.frozen)}.",
        ]
        lines += self._depth_rows()
        if self.frozen:
            lines += ["", "| frozen group | layers | channels | why |", "|---|---|---:|---|"]
            lines += [
                f"| `{f['root']}` | {', '.join(f.get('layers', ()))} | {f['size']} | {f['reason']} |"
                for f in self.frozen
            ]
        return "\n".join(lines) + "\n"

    def _depth_rows(self) -> list[str]:
        if self.depth is None:
            return []
        removed, kept = self.depth["removed"], self.depth["kept"]
        lines = [
            "",
            f"Depth pruning: {len(removed)} of {len(removed) + len(kept)} removable residual "
            "blocks removed (now the identity).",
        ]
        if removed:
            lines += [
                "",
                "| removed block | importance per task | score | conflict | saved ms (predicted) |",
                "|---|---|---:|---:|---:|",
            ]
            for r in removed:
                tasks = ", ".join(f"{t} {v:.3g}" for t, v in r.get("per_task", {}).items())
                conflict = f"{r['conflict']:.3f}" if "conflict" in r else ""
                lines.append(
                    f"| `{r['block']}` | {tasks} | {r.get('score', 0.0):.3g} | {conflict} | "
                    f"{r['saved_ms']:.3f} |"
                )
        return lines

    def _round_to_line(self) -> list[str]:
        if not self.round_to:
            return []
        return ["", f"Widths on steps of {self.round_to['value']} ({self.round_to['source']})."]

    def _latency_rows(self) -> list[str]:
        lat = self.latency
        if not lat:
            return []
        k = lat["key"]
        where = f"{k['backend']} {k['precision']}, batch {k['batch']}, {k['device']}"
        rows = [
            f"| latency, predicted ({where}) | {lat['predicted_before_ms']:.2f} ms | "
            f"{lat['predicted_after_ms']:.2f} ms | {-(self.latency_ratio or 0.0):+.2%} |"
        ]
        top = lat.get("top_savings", [])[:8]
        if top:
            rows += [
                "",
                "Layers that bought the most time (predicted ms per batch, before -> after):",
                "",
                "| layer | widths before | widths after | ms before | ms after | saved |",
                "|---|---|---|---:|---:|---:|",
            ]
            rows += [
                f"| `{r['layer']}` | {r['before'][0]}->{r['before'][1]} | "
                f"{r['after'][0]}->{r['after'][1]} | {r['ms_before']:.3f} | {r['ms_after']:.3f} | "
                f"{r['saved_ms']:.3f} |"
                for r in top
            ]
        return rows

    def plot_savings(self, path: str | os.PathLike, top: int = 20) -> Path | None:
        """Horizontal bars: the layers whose narrowing saved the most predicted latency."""
        if not self.latency or not self.latency.get("top_savings"):
            return None
        plt = _pyplot()
        rows = self.latency["top_savings"][:top][::-1]
        fig, ax = plt.subplots(figsize=(8, 0.3 * len(rows) + 1.5))
        ax.barh(range(len(rows)), [r["saved_ms"] for r in rows], color="#2ca02c")
        ax.set_yticks(range(len(rows)), [r["layer"] for r in rows], fontsize=7)
        ax.set_xlabel("predicted latency saved (ms per batch)")
        k = self.latency["key"]
        ax.set_title(
            f"Where the time went: {self.latency['predicted_before_ms']:.1f} -> "
            f"{self.latency['predicted_after_ms']:.1f} ms ({k['backend']} {k['precision']})"
        )
        return _save(fig, path)

    def plot_widths(self, path: str | os.PathLike, title: str = "Per-layer widths") -> Path:
        """Bar chart of output widths before/after, one bar pair per conv/linear layer."""
        plt = _pyplot()
        rows = self.widths
        fig, ax = plt.subplots(figsize=(max(8, 0.12 * len(rows) + 2), 4.5))
        xs = range(len(rows))
        ax.bar(xs, [r["before"] for r in rows], color="#c8c8c8", label="before", width=0.9)
        ax.bar(xs, [r["after"] for r in rows], color="#1f77b4", label="after", width=0.6)
        ax.set_xlabel("layer (model order)")
        ax.set_ylabel("output channels")
        ax.set_title(f"{title}: params {-self.params_ratio:+.1%}, FLOPs {-self.flops_ratio:+.1%}")
        step = max(1, len(rows) // 30)
        ax.set_xticks(list(xs)[::step], [r["layer"] for r in rows][::step], rotation=90, fontsize=6)
        ax.legend()
        return _save(fig, path)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike) -> Path:
    """Write a figure as PNG atomically and close it."""
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        _pyplot().close(fig)
    return Path(path)
