"""The output folder of `mtc-compress`: who may write into it, and how a killed run continues.

A compression run writes, in order: `compress_state.json` (its settings and the pruning report,
right after pruning), `train/last.pt` (the student's distillation / fine-tune state, every epoch),
then `student.pt`, `report.json/md` and `widths.png`. A folder holding any of these belongs to a
run: a new run refuses it unless `--overwrite` (which removes those files first) or `--resume`
(which continues from `train/last.pt` with the pruned architecture it records, no re-pruning).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from compressor.checkpoint import load_checkpoint
from compressor.pruning.pruner import PruneResult
from compressor.pruning.report import PruneReport, StepReport
from compressor.train.config import TrainConfig
from compressor.train.loop import RUN_FILES
from compressor.train.report import write_json
from runtime.errors import MtcError

STATE_FILE = "compress_state.json"
FINAL_FILES = ("student.pt", "report.json", "report.md", "widths.png")
# Settings that may differ between a killed run and its resume (where and how it runs).
VOLATILE = ("resume", "overwrite", "progress", "workers", "device", "strict_labels")


class CompressResumeError(MtcError):
    """The output folder holds another (or an unfinished) compression, or cannot be resumed."""


def _run_files(out: Path) -> list[Path]:
    """Files of ours in `out`: final outputs, the state file, train/ and stepN/ run files."""
    found = [out / n for n in (*FINAL_FILES, STATE_FILE) if (out / n).is_file()]
    for sub in [out / "train", *sorted(out.glob("step*"))]:
        found += [sub / n for n in RUN_FILES if (sub / n).is_file()]
    return found


def check_out_folder(out: Path, resume: bool, overwrite: bool) -> None:
    """The folder rule, before any work: see the module docstring."""
    if resume and overwrite:
        raise CompressResumeError("--resume and --overwrite contradict each other; pass one")
    last = out / "train" / "last.pt"
    if resume:
        if (out / "student.pt").is_file():
            raise CompressResumeError(
                f"nothing to resume: {out} holds a finished compression ({out / 'student.pt'}, "
                f"report {out / 'report.md'}); pass --overwrite to run it again"
            )
        if not last.is_file() or not (out / STATE_FILE).is_file():
            raise CompressResumeError(
                f"nothing to resume in {out}: no {last} (a run saves it after each student "
                "training epoch; one killed earlier starts over with --overwrite)"
            )
        return
    found = _run_files(out)
    if found and not overwrite:
        finished = (out / "student.pt").is_file()
        what = "a compression run" if finished else "the files of an unfinished compression"
        hint = "" if finished else f"continue it with --resume -o {out}, "
        raise CompressResumeError(
            f"{out} already holds {what} ({found[0]}); {hint}choose another -o, or pass "
            "--overwrite to start over (its files are removed first)"
        )


def remove_run_files(out: Path) -> None:
    """--overwrite: drop the previous run's files (and the stepN folders they leave empty) so
    none of them is taken for the new run's."""
    for p in _run_files(out):
        p.unlink(missing_ok=True)
    for sub in [out / "train", *out.glob("step*")]:
        if sub.is_dir() and not any(sub.iterdir()):
            shutil.rmtree(sub, ignore_errors=True)


def _settings(cfg_dict: dict) -> dict:
    return {k: v for k, v in cfg_dict.items() if k not in VOLATILE}


def save_state(out: Path, cfg_dict: dict, report: PruneReport) -> None:
    write_json(out / STATE_FILE, {"settings": _settings(cfg_dict), "prune": report.to_dict()})


def load_state(out: Path, cfg_dict: dict) -> PruneReport:
    """The killed run's pruning report; its settings must equal this run's."""
    path = out / STATE_FILE
    try:
        state = json.loads(path.read_text())
        saved, rep = state["settings"], state["prune"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CompressResumeError(
            f"{path} is unreadable or damaged ({type(e).__name__}); start over with --overwrite"
        ) from None
    now = _settings(cfg_dict)
    diff = [k for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)]
    if diff:
        shown = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in diff[:4])
        raise CompressResumeError(
            f"--resume with other settings than the killed run in {out} ({shown}); a resumed "
            "run keeps its settings: repeat the original command with --resume"
        )
    return _report_from_dict(rep, path)


def _report_from_dict(d: dict, path: Path) -> PruneReport:
    try:
        names = {f.name for f in fields(PruneReport)}
        kw: dict[str, Any] = {k: v for k, v in d.items() if k in names}
        kw["steps"] = [StepReport(**s) for s in d.get("steps", [])]
        return PruneReport(**kw)
    except TypeError as e:
        raise CompressResumeError(
            f"{path}: pruning report does not fit ({e}); start over with --overwrite"
        ) from None


def resumed_prune(out: Path, cfg_dict: dict) -> Callable[..., PruneResult]:
    """A stand-in for `prune` on --resume: returns the killed run's pruned student instead of
    pruning again (checked now, before any work)."""
    result = resume_pruned(out, cfg_dict)
    return lambda *args, **kwargs: result


def resume_pruned(out: Path, cfg_dict: dict) -> PruneResult:
    """The pruned student of the killed run, rebuilt from the pruning record in its
    train/last.pt (weights are restored by the training loop's resume)."""
    report = load_state(out, cfg_dict)
    model, ckpt = load_checkpoint(out / "train" / "last.pt")
    if not ckpt.pruning:
        raise CompressResumeError(
            f"{out / 'train' / 'last.pt'} holds no pruning record (not written by mtc-compress); "
            "start over with --overwrite"
        )
    return PruneResult(model, ckpt.pruning, report)


def resume_train_config(tcfg: TrainConfig, out: Path, resume: bool) -> TrainConfig:
    """The student's training config, continuing train/last.pt when resuming."""
    if not resume:
        return tcfg
    return replace(tcfg, resume=str(out / "train" / "last.pt"))
