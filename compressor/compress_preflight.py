"""What `mtc-compress` checks before any work, and what it undoes when it fails before its
first resumable checkpoint: a mistake found late must not leave a folder that refuses the
corrected rerun (`compress_state.json` without `train/last.pt` can be neither resumed nor
reused without --overwrite)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from compressor.compress_resume import remove_run_files
from compressor.data.layouts import count_image_files
from runtime.cli_kernel import remove_empty_dir
from runtime.errors import MtcError

if TYPE_CHECKING:
    from compressor.compress import CompressConfig


class CompressPreflightError(MtcError):
    """A setting that cannot work with the data, found before anything was loaded."""


def _trains(cfg: CompressConfig) -> bool:
    """Whether the run trains the student (after pruning, or between iterative steps)."""
    return cfg.epochs > 0 or (cfg.prune.iterative_steps > 1 and cfg.step_epochs > 0)


def _per_rank(n: int) -> tuple[int, int]:
    world = max(1, int(os.environ.get("WORLD_SIZE", "1") or 1))
    return -(-n // world), world


def batch_error(cfg: CompressConfig, n_images: int, counted: str) -> CompressPreflightError | None:
    """The error for a training batch larger than the (per-process) training set, else None."""
    if not _trains(cfg):
        return None
    per_rank, world = _per_rank(n_images)
    if cfg.batch <= per_rank:
        return None
    where = f" per process ({world} processes)" if world > 1 else ""
    return CompressPreflightError(
        f"--batch {cfg.batch} is larger than the {per_rank} {counted}{where} in {cfg.data} split "
        f"'train'; use --batch {max(1, per_rank)} or less, or add images (checked before loading "
        f"the teacher: nothing was written)"
    )


def check_batch_before_loading(cfg: CompressConfig) -> None:
    """From the image files alone (an upper bound on the labelled samples): no label, image or
    checkpoint is read. The exact count is checked again once the data set is scanned."""
    n = count_image_files(Path(cfg.data), "train", cfg.max_train_images)
    err = batch_error(cfg, n, "image files")
    if err is not None:
        raise err


def check_batch_after_scan(cfg: CompressConfig, n_samples: int) -> None:
    err = batch_error(cfg, n_samples, "labelled training images")
    if err is not None:
        raise err


@contextmanager
def undone_unless_resumable(cfg: CompressConfig, out: Path) -> Iterator[None]:
    """A run (not a --resume) that fails or is interrupted before `train/last.pt` exists removes
    the files it wrote (state, stepN fine-tunes) and the folder if it made it: there is nothing
    to resume, and leaving them would refuse the corrected rerun."""
    existed = out.exists()
    try:
        yield
    except BaseException:
        started = cfg.resume or (out / "train" / "last.pt").is_file()
        if not started and int(os.environ.get("RANK", "0")) == 0:
            remove_run_files(out)
            remove_empty_dir(out, existed)
        raise
