"""PNG for the latency report: histogram + per-frame timeline. matplotlib is optional (the Jetson
runtime image has none), so it is imported here, lazily, and its absence becomes a report note."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from runtime.fileio import atomic_path

if TYPE_CHECKING:
    from runtime.latency import LatencyReport


def write_latency_png(report: LatencyReport, path: Path) -> str | None:
    """Write the PNG; return None, or a note saying why there is none."""
    values = [row["end_to_end"] for row in report.timeline]
    if not values:
        return "no latency plot: nothing was measured"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return 'no latency plot: matplotlib is not installed (pip install "mtc[plots]")'
    budget = 1000.0 / report.info.target_fps
    fig, (hist, line) = plt.subplots(1, 2, figsize=(11, 3.8))
    hist.hist(values, bins=min(50, max(5, len(values) // 4)), color="#4c72b0")
    hist.axvline(budget, color="#c44e52", linestyle="--", label=f"{budget:.1f} ms budget")
    hist.set_xlabel("end-to-end latency per frame (ms)")
    hist.set_ylabel("frames")
    hist.legend()
    line.plot(range(len(values)), values, lw=0.8, color="#4c72b0")
    line.axhline(budget, color="#c44e52", linestyle="--")
    line.set_xlabel("measured frame")
    line.set_ylabel("ms")
    info = report.info
    fps = "n/a" if report.throughput_fps is None else f"{report.throughput_fps:.1f} fps"
    cams = f" | {len(report.sources)} cameras" if len(report.sources) > 1 else ""
    fig.suptitle(
        f"{info.artifact} | {info.backend} | batch {info.batch} | {info.precision}{cams} | "
        f"throughput {fps} (frames / wall time)"
    )
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return None
