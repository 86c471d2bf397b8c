"""`generate`: a seeded synthetic data set in YOLOP's BDD100K layout, written in parallel.

Each image's Generator is seeded from (seed, split, index), so the bytes on disk do not depend on
the number of workers or on the order they finish in. Mask convention: uint8 PNG, 0 background,
255 drivable / lane (the loader accepts 0/1 as well).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from compressor.data.errors import DataConfigError, OutputDirError
from compressor.data.synth_render import Frame, render_frame

SPLITS: tuple[str, ...] = ("train", "val")
FOLDERS: dict[str, str] = {  # kind -> top folder of the YOLOP layout
    "image": "images",
    "det": "det_annotations",
    "drivable": "da_seg_annotations",
    "lane_wide": "ll_seg_annotations",
    "lane_thin": "ll_seg_annotations_thin",
}
MANIFEST = "synth_manifest.json"
SYNTH_FORMAT = 1
MIN_SIZE = 64
# Binary masks: unfiltered PNG is ~5x faster to write than OpenCV's default, at a similar size.
PNG_PARAMS: list[int] = [cv2.IMWRITE_PNG_COMPRESSION, 1]
if hasattr(cv2, "IMWRITE_PNG_FILTER"):  # OpenCV >= 4.10
    PNG_PARAMS += [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE]


@dataclass(frozen=True)
class SynthConfig:
    out: Path
    n_train: int = 100
    n_val: int = 20
    width: int = 1280
    height: int = 720
    seed: int = 0
    lane_width_wide: int = 8
    lane_width_thin: int = 2
    jpeg_quality: int = 90
    workers: int = 2
    overwrite: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))
        problems = []
        if self.n_train < 0 or self.n_val < 0:
            problems.append(f"counts must be >= 0 (got n_train={self.n_train}, n_val={self.n_val})")
        elif self.n_train + self.n_val == 0:
            problems.append("n_train + n_val is 0: nothing to generate")
        if min(self.width, self.height) < MIN_SIZE:
            problems.append(
                f"image size must be at least {MIN_SIZE}x{MIN_SIZE} (got {self.width}x{self.height})"
            )
        if min(self.lane_width_wide, self.lane_width_thin) < 1:
            problems.append(
                f"lane widths must be >= 1 px (got wide={self.lane_width_wide}, "
                f"thin={self.lane_width_thin})"
            )
        if not 1 <= self.jpeg_quality <= 100:
            problems.append(f"jpeg_quality must be in 1..100 (got {self.jpeg_quality})")
        if self.workers < 0:
            problems.append(f"workers must be >= 0 (got {self.workers}; 0 or 1 = no subprocess)")
        if problems:
            raise DataConfigError("bad synthetic data config: " + "; ".join(problems))

    def count(self, split: str) -> int:
        return {"train": self.n_train, "val": self.n_val}[split]


@dataclass(frozen=True)
class SynthReport:
    out: Path
    counts: dict[str, int]
    objects: dict[str, dict[str, int]]  # split -> category -> labelled boxes
    seconds: float
    manifest: Path = field(default=Path())

    @property
    def images_per_s(self) -> float:
        return sum(self.counts.values()) / max(self.seconds, 1e-9)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(out=str(self.out), manifest=str(self.manifest), images_per_s=self.images_per_s)
        return d


def image_name(seed: int, split: str, index: int) -> str:
    """BDD-looking name ("xxxxxxxx-xxxxxxxx"), unique per (seed, split, index)."""
    h = hashlib.blake2b(f"mtc-synth/{seed}/{split}/{index}".encode(), digest_size=8).hexdigest()
    return f"{h[:8]}-{h[8:]}"


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, SPLITS.index(split), index])


def atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _encode(ext: str, arr: np.ndarray, params: list[int]) -> bytes:
    ok, buf = cv2.imencode(ext, arr, params)
    if not ok:  # pragma: no cover - OpenCV only fails on invalid arrays
        raise RuntimeError(f"OpenCV could not encode a {arr.shape} array as {ext}")
    return buf.tobytes()


def write_frame(out: Path, split: str, name: str, frame: Frame, jpeg_quality: int) -> None:
    png = PNG_PARAMS
    files = {
        "image": (".jpg", cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR)),
        "drivable": (".png", frame.drivable),
        "lane_wide": (".png", frame.lane_wide),
        "lane_thin": (".png", frame.lane_thin),
    }
    for kind, (ext, arr) in files.items():
        params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if ext == ".jpg" else png
        atomic_write(out / FOLDERS[kind] / split / f"{name}{ext}", _encode(ext, arr, params))
    label = json.dumps(frame.label, indent=1).encode()
    atomic_write(out / FOLDERS["det"] / split / f"{name}.json", label)


def make_one(job: tuple[SynthConfig, str, int]) -> tuple[str, dict[str, int]]:
    """Render and write one image (runs in a worker); returns its split and category counts."""
    cfg, split, index = job
    name = image_name(cfg.seed, split, index)
    frame = render_frame(
        name,
        cfg.width,
        cfg.height,
        cfg.lane_width_wide,
        cfg.lane_width_thin,
        image_rng(cfg.seed, split, index),
    )
    write_frame(cfg.out, split, name, frame, cfg.jpeg_quality)
    objs = frame.label["frames"][0]["objects"]
    return split, dict(Counter(o["category"] for o in objs if "box2d" in o))


def prepare_out(cfg: SynthConfig) -> None:
    """Create the layout folders; refuse to mix with an existing data set unless overwrite."""
    out = cfg.out
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"--out {out} is a file; expected a folder (new or empty)")
    existing = [out / top for top in FOLDERS.values() if (out / top).exists()]
    if existing and not cfg.overwrite:
        raise OutputDirError(
            f"{out} already holds a data set ({existing[0].name}/ exists); pass --overwrite "
            f"(overwrite=True) to replace it, or choose another --out"
        )
    for path in existing:
        shutil.rmtree(path)
    for top in FOLDERS.values():
        for split in SPLITS:
            (out / top / split).mkdir(parents=True, exist_ok=True)


def _init_worker() -> None:
    cv2.setNumThreads(1)


def _run_jobs(cfg: SynthConfig, jobs: list, progress: bool) -> list[tuple[str, dict[str, int]]]:
    bar = tqdm(total=len(jobs), desc="mtc-synth", unit="img", disable=not progress)
    results = []
    if cfg.workers <= 1:
        for job in jobs:
            results.append(make_one(job))
            bar.update()
    else:
        ctx = mp.get_context("spawn")  # no fork: the parent may hold torch / OpenMP threads
        with ctx.Pool(cfg.workers, initializer=_init_worker) as pool:
            for res in pool.imap_unordered(make_one, jobs, chunksize=4):
                results.append(res)
                bar.update()
    bar.close()
    return results


def generate(cfg: SynthConfig, progress: bool = True) -> SynthReport:
    prepare_out(cfg)
    jobs = [(cfg, split, i) for split in SPLITS for i in range(cfg.count(split))]
    start = time.perf_counter()
    results = _run_jobs(cfg, jobs, progress)
    seconds = time.perf_counter() - start
    objects: dict[str, Counter] = {split: Counter() for split in SPLITS}
    for split, counts in results:
        objects[split].update(counts)
    report = SynthReport(
        out=cfg.out,
        counts={split: cfg.count(split) for split in SPLITS},
        objects={s: dict(sorted(c.items())) for s, c in objects.items()},
        seconds=seconds,
        manifest=cfg.out / MANIFEST,
    )
    write_manifest(cfg, report)
    return report


def mtc_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mtc")
    except PackageNotFoundError:
        return "0+unknown"


def write_manifest(cfg: SynthConfig, report: SynthReport) -> None:
    manifest = {
        "generator": "mtc-synth",
        "synth_format": SYNTH_FORMAT,
        "mtc_version": mtc_version(),
        "layout": "yolop",
        "config": {**asdict(cfg), "out": str(cfg.out)},
        "counts": report.counts,
        "objects": report.objects,
        "masks": {
            "values": "uint8 PNG: 0 background, 255 drivable / lane",
            "lane_width_px": {
                FOLDERS["lane_wide"]: cfg.lane_width_wide,
                FOLDERS["lane_thin"]: cfg.lane_width_thin,
            },
        },
    }
    atomic_write(cfg.out / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
