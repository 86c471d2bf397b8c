"""Activation ranges for INT8: run the FP32 ONNX over calibration images in ONNX Runtime and
reduce each quantised tensor's values to one `amax` (the scale is amax / 127, symmetric).

Methods (`CALIBRATIONS`):
- `max`: the largest |x| seen. Never clips; one outlier costs every other value resolution.
- `percentile`: the `percentile`-th percentile of |x| (default 99.99) from a 2048-bin histogram.
- `entropy`: TensorRT's entropy calibration: the threshold whose 128-level quantised
  distribution of |x| is closest (KL divergence) to the 2048-bin reference histogram.
- `mse`: the threshold with the least expected squared quantisation error over the histogram
  (rounding noise step^2 / 12 below it, clipping error above it), per tensor.

- `auto` (`AUTO_CANDIDATES`): max, percentile 99.9 and 99.99, entropy and mse, all from the
  same two passes; the export keeps the one whose all-INT8 model's outputs disagree least with
  the FP32 export's on the guard images (`export.int8.stage`).

Two passes over the images: the first finds each tensor's max (the histogram range), the second
fills the histograms (for every method but max). Calibration images come from the data set
through the runtime's own preprocessing, so INT8 ranges are those of what the vehicle feeds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from tqdm import tqdm

from export.errors import ExportConfigError, Int8Error
from runtime.sidecar import PreprocessInfo

CALIBRATIONS: tuple[str, ...] = ("max", "percentile", "entropy", "mse")
HIST_BINS = 2048
QUANT_LEVELS = 128  # |x| levels of a symmetric int8 (0..127)


@dataclass(frozen=True)
class CalibrationImages:
    """Preprocessed calibration batch source: (N, 3, H, W) float32 plus where it came from."""

    images: np.ndarray
    source: str

    def batches(self, batch: int) -> Iterable[np.ndarray]:
        for s in range(0, len(self.images), batch):
            yield self.images[s : s + batch]


def load_calibration_images(
    source: str | Path,
    preprocess: PreprocessInfo,
    n: int,
    batch: int,
    split: str = "train",
    progress: bool = True,
) -> CalibrationImages:
    """`n` images from `source`: a data set root (its `split`, evenly spaced over the split,
    letterboxed and normalised by the runtime's Preprocessor for `preprocess`), or a `.npy`
    file of already preprocessed images (N, 3, H, W) float32 at the model's input size."""
    path = Path(source)
    check_calibration_source(path, tuple(preprocess.input_hw), batch, split)  # type: ignore[arg-type]
    images = _from_npy(path, preprocess) if path.suffix == ".npy" else None
    if images is None:
        images = _from_dataset(path, split, preprocess, n, progress)
    elif len(images) > n:
        images = images[np.linspace(0, len(images) - 1, n).round().astype(int)]
    return CalibrationImages(np.ascontiguousarray(images, np.float32), str(path))


def check_calibration_source(
    source: str | Path, input_hw: tuple[int, int], batch: int, split: str
) -> int:
    """Before any work: the calibration source exists, has the model's input size and layout
    (a .npy) or a split with images (a data set), and holds at least `batch` images. Returns
    how many images it holds."""
    path = Path(source)
    if not path.exists():
        raise ExportConfigError(
            f"--calib-data {path} does not exist; expected a data set root (its {split!r} split "
            "is used) or a .npy file of preprocessed images"
        )
    if path.suffix == ".npy":
        # already preprocessed: only the size is checked
        size_only = PreprocessInfo(input_hw, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), letterbox=False)
        n = len(_from_npy(path, size_only, mmap=True))
    else:
        n = count_split_images(path, split, "--calib-data")
    if n < batch:
        raise ExportConfigError(
            f"--calib-data {path} holds {n} calibration image(s) ({split!r}), fewer than the "
            f"calibration batch {batch}; add images or lower --calib-batch"
        )
    return n


def count_split_images(root: Path, split: str, flag: str) -> int:
    """Labelled images in `split` of the data set at `root` (a scan of the file names only)."""
    from compressor.data import BddDataset, DataConfig
    from runtime.errors import MtcError

    try:
        return len(BddDataset(root, split, DataConfig()))
    except MtcError as e:
        raise ExportConfigError(f"{flag} {root}: {e}") from None


def _from_npy(path: Path, preprocess: PreprocessInfo, mmap: bool = False) -> np.ndarray:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ExportConfigError(f"--calib-data {path} is not a readable .npy file ({e})") from None
    h, w = preprocess.input_hw
    if arr.ndim == 4 and arr.shape[1:] == (h, w, 3):
        raise ExportConfigError(
            f"--calib-data {path} holds NHWC images {list(arr.shape)}; expected NCHW "
            f"(N, 3, {h}, {w}) as the model takes them (np.transpose(x, (0, 3, 1, 2)))"
        )
    if arr.ndim != 4 or arr.shape[1:] != (3, h, w):
        raise ExportConfigError(
            f"--calib-data {path} holds an array of shape {list(arr.shape)}; the model takes "
            f"(N, 3, {h}, {w}) float32: preprocess at the export's input size, or pass the data "
            "set root instead"
        )
    return arr if mmap else np.asarray(arr, np.float32)


def _from_dataset(
    root: Path, split: str, preprocess: PreprocessInfo, n: int, progress: bool
) -> np.ndarray:
    from compressor.data import BddDataset, DataConfig
    from runtime.preprocess import Preprocessor

    ds = BddDataset(root, split, DataConfig(input_hw=tuple(preprocess.input_hw)))  # type: ignore[arg-type]
    pick = np.unique(np.linspace(0, len(ds) - 1, min(n, len(ds))).round().astype(int))
    pre = Preprocessor(preprocess, 1)
    h, w = preprocess.input_hw
    out = np.empty((len(pick), 3, h, w), np.float32)
    for j, i in enumerate(tqdm(pick, desc="calibration images", leave=False, disable=not progress)):
        rgb = ds.load_raw(int(i))[0]
        out[j] = pre([np.ascontiguousarray(rgb[..., ::-1])])[0][0]
    return out


def with_outputs(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy of `model` that also outputs the tensors `names` (for reading activations)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    for name in names:
        if name not in have:
            m.graph.output.append(
                onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
            )
    return m


def collect_ranges(
    model: onnx.ModelProto,
    tensors: Sequence[str],
    calib: CalibrationImages,
    method: str = "max",
    percentile: float = 99.99,
    batch: int = 8,
    threads: int = 2,
    progress: bool = True,
) -> dict[str, float]:
    """amax per tensor in `tensors` over the calibration images, by `method`."""
    cand = Candidate.of(method, percentile)
    return collect_candidates(model, tensors, calib, [cand], batch, threads, progress)[0]


@dataclass(frozen=True)
class Candidate:
    """A calibration method with its parameter (`percentile` for the percentile method)."""

    method: str
    percentile: float | None = None

    @classmethod
    def of(cls, method: str, percentile: float) -> Candidate:
        """`method` with `percentile` where the method takes one."""
        return cls(method, percentile if method == "percentile" else None)

    def __str__(self) -> str:
        return f"{self.method} {self.percentile:g}" if self.percentile is not None else self.method


# What `--calibration auto` tries: the FP32 outputs decide between them (`export.int8.stage`).
AUTO = "auto"
AUTO_CANDIDATES: tuple[Candidate, ...] = (
    Candidate("max"),
    Candidate("percentile", 99.9),
    Candidate("percentile", 99.99),
    Candidate("entropy"),
    Candidate("mse"),
)


def collect_candidates(
    model: onnx.ModelProto,
    tensors: Sequence[str],
    calib: CalibrationImages,
    candidates: Sequence[Candidate],
    batch: int = 8,
    threads: int = 2,
    progress: bool = True,
) -> list[dict[str, float]]:
    """amax per tensor for each candidate, from one pass for the maxima and (when a candidate
    needs it) one for the histograms."""
    for c in candidates:
        if c.method not in CALIBRATIONS:
            raise ExportConfigError(
                f"--calibration {c.method!r} is not one of {', '.join(CALIBRATIONS)}"
            )
    from export.checks.ort import OrtModel

    run = OrtModel(with_outputs(model, tensors), threads=threads)
    names = list(tensors)
    hist_needed = any(c.method != "max" for c in candidates)
    steps = -(-len(calib.images) // batch) * (2 if hist_needed else 1)
    bar = tqdm(total=steps, desc="calibrate", leave=False, disable=not progress)
    amax = dict.fromkeys(names, 0.0)
    _each_batch(run, calib, batch, names, bar, lambda n, a: _max_into(amax, n, a))
    hists = {n: np.zeros(HIST_BINS, np.float64) for n in names}
    if hist_needed:
        _each_batch(run, calib, batch, names, bar, lambda n, a: _hist_into(hists[n], amax[n], a))
    bar.close()
    reducers: dict[str, Callable[[np.ndarray, float, float], float]] = {
        "percentile": _percentile_amax,
        "entropy": _entropy_amax,
        "mse": _mse_amax,
    }
    out = []
    for c in candidates:
        if c.method == "max":
            out.append(dict(amax))
            continue
        reduce, p = reducers[c.method], c.percentile or 0.0
        out.append({n: reduce(hists[n], amax[n], p) for n in names})
    return out


def _each_batch(
    run: Callable, calib: CalibrationImages, batch: int, names: list[str], bar: tqdm, fn: Callable
) -> None:
    for images in calib.batches(batch):
        outs = run(images)
        for n in names:
            fn(n, np.abs(outs[n]))
        bar.update(1)


def _max_into(amax: dict[str, float], name: str, a: np.ndarray) -> None:
    if not np.all(np.isfinite(a)):
        raise Int8Error(
            f"tensor {name!r} is not finite on a calibration image; the FP32 model overflows "
            "there and cannot be calibrated"
        )
    amax[name] = max(amax[name], float(a.max()) if a.size else 0.0)


def _hist_into(hist: np.ndarray, top: float, a: np.ndarray) -> None:
    if top <= 0:
        hist[0] += a.size
        return
    idx = np.minimum((a.ravel() * (HIST_BINS / top)).astype(np.int64), HIST_BINS - 1)
    hist += np.bincount(idx, minlength=HIST_BINS)


def _percentile_amax(hist: np.ndarray, top: float, percentile: float) -> float:
    if top <= 0 or hist.sum() == 0:
        return top
    cdf = np.cumsum(hist) / hist.sum()
    i = int(np.searchsorted(cdf, percentile / 100.0))
    return float(top * min(i + 1, HIST_BINS) / HIST_BINS)


def _entropy_amax(hist: np.ndarray, top: float, _percentile: float = 0.0) -> float:
    """TensorRT's entropy calibration on a histogram of |x| over [0, top]: for each candidate
    threshold i (bins), P = the first i bins with the tail folded into the last, Q = P merged
    into 128 levels and expanded back over its non-empty bins; amax = the i with least KL(P||Q)."""
    if top <= 0 or hist.sum() == 0:
        return top
    h = hist.astype(np.float64)
    nz = np.flatnonzero(h)
    if nz[-1] < QUANT_LEVELS:  # every value below 128 bins: nothing is lost without clipping
        return top
    best_i, best_kl = HIST_BINS, np.inf
    for i in range(QUANT_LEVELS, HIST_BINS + 1, 8):
        p = h[:i].copy()
        p[-1] += h[i:].sum()
        q = _expand(_merge(h[:i], QUANT_LEVELS), p > 0, i)
        kl = _kl(p, q)
        if kl < best_kl:
            best_i, best_kl = i, kl
    return float(top * best_i / HIST_BINS)


def _mse_amax(hist: np.ndarray, top: float, _percentile: float = 0.0) -> float:
    """amax minimising the expected squared error of symmetric int8 over the histogram: each
    bin's centre is quantised exactly (rounded to the step amax / 127, clipped at amax), or, where
    a bin spans several steps, it carries the uniform rounding noise step^2 / 12."""
    if top <= 0 or hist.sum() == 0:
        return top
    width = top / HIST_BINS
    centres = (np.arange(HIST_BINS) + 0.5) * width
    cands = top * np.arange(8, HIST_BINS + 1, 8) / HIST_BINS
    step = (cands / (QUANT_LEVELS - 1))[:, None]
    levels = np.clip(np.rint(centres[None, :] / step), 0, QUANT_LEVELS - 1)
    exact = (levels * step - centres[None, :]) ** 2
    over = np.maximum(centres[None, :] - cands[:, None], 0.0) ** 2
    noisy = np.where(centres[None, :] <= cands[:, None], step**2 / 12.0, over)
    err = np.where(width < step, exact, noisy) @ hist
    return float(cands[int(np.argmin(err))])


def _merge(p: np.ndarray, levels: int) -> np.ndarray:
    edges = np.linspace(0, len(p), levels + 1).astype(int)
    return np.add.reduceat(p, edges[:-1])


def _expand(merged: np.ndarray, nonzero: np.ndarray, n: int) -> np.ndarray:
    """Spread each level's count evenly over the non-empty bins it covers."""
    edges = np.linspace(0, n, len(merged) + 1).astype(int)
    q = np.zeros(n, np.float64)
    for k in range(len(merged)):
        sel = nonzero[edges[k] : edges[k + 1]]
        c = int(sel.sum())
        if c:
            q[edges[k] : edges[k + 1]][sel] = merged[k] / c
    return q


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    ps, qs = p.sum(), q.sum()
    if ps == 0 or qs == 0:
        return np.inf
    p, q = p / ps, q / qs
    m = p > 0
    if np.any(q[m] == 0):
        return np.inf
    return float(np.sum(p[m] * np.log(p[m] / q[m])))


__all__ = [
    "AUTO",
    "AUTO_CANDIDATES",
    "CALIBRATIONS",
    "Candidate",
    "CalibrationImages",
    "collect_ranges",
    "load_calibration_images",
]
