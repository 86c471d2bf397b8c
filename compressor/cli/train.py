"""`mtc-train`: train a multi-task model (alone or under torchrun). Every flag is a TrainConfig
field, or a loss option of the trained model (a field of its spec's loss config, e.g.
--lane-weight for yolop and twinlitenet, --box-gain for yolop only: an option the model's loss
does not have is an error). The defaults shown by --help come from those dataclasses.

    mtc-train --data DIR --model yolop --width 0.25 --depth 0.33 --imgsz 192 320 --epochs 20 \\
        --batch 8 -o out/teacher
    mtc-train --resume out/teacher/last.pt            # continue exactly where it stopped
    torchrun --nproc_per_node 2 -m compressor.cli.train --data DIR ...
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

from compressor.cli.common import CliInterrupted, Parser, run_cli
from compressor.cli.label_flags import LABEL_FLAGS
from compressor.models.registry import get_spec, list_models
from compressor.train import TrainConfig, resume_config, train
from compressor.train.config import (
    BEST_METRICS,
    DET_MODES,
    LANE_LABELS,
    LR_SCHEDULES,
    OPTIMIZERS,
    SEG_MODES,
)
from compressor.train.report import eval_text
from runtime.cli_kernel import check_input_path, check_output_dir, default_help

S = argparse.SUPPRESS  # only flags the user gave reach the config: defaults stay in one place

# (flag, config field, argparse options); the loss options (`_loss_flags`) follow.
FLAGS: list[tuple[str, str, dict]] = [
    ("--data", "data", {"help": "data set root (YOLOP or BDD100K layout)"}),
    ("-o", "out", {"help": "output folder (last.pt, best.pt, metrics.json/md)"}),
    ("--imgsz", "imgsz", {"nargs": 2, "type": int, "metavar": ("H", "W"), "help": "input size"}),
    ("--epochs", "epochs", {"type": int}),
    ("--batch", "batch", {"type": int, "help": "batch size per process"}),
    ("--model", "model", {"help": "registered model name"}),
    ("--width", "width", {"type": float}),
    ("--depth", "depth", {"type": float}),
    ("--num-classes", "num_classes", {"type": int}),
    ("--init", "init", {"help": "start from this checkpoint's weights (new run)"}),
    ("--resume", "resume", {"help": "continue the run saved in this last.pt"}),
    ("--overwrite", "overwrite", {"action": "store_true", "help": "start over in a used -o"}),
    ("--optimizer", "optimizer", {"choices": OPTIMIZERS}),
    ("--lr", "lr", {"type": float}),
    ("--momentum", "momentum", {"type": float, "help": "SGD momentum / AdamW beta1"}),
    ("--weight-decay", "weight_decay", {"type": float}),
    ("--warmup-epochs", "warmup_epochs", {"type": float}),
    ("--lr-schedule", "lr_schedule", {"choices": LR_SCHEDULES}),
    ("--lr-final", "lr_final", {"type": float, "help": "final lr as a fraction of --lr"}),
    ("--ema", "ema", {"action": argparse.BooleanOptionalAction}),
    ("--ema-decay", "ema_decay", {"type": float}),
    ("--ema-tau", "ema_tau", {"type": float}),
    ("--amp", "amp", {"action": argparse.BooleanOptionalAction, "help": "mixed precision (GPU)"}),
    (
        "--cpu-bf16",
        "cpu_bf16",
        {
            "action": argparse.BooleanOptionalAction,
            "help": "bfloat16 autocast on CPU (fast only on CPUs with AVX512-BF16 or AMX)",
        },
    ),
    ("--grad-clip", "grad_clip", {"type": float, "help": "max grad norm, 0 = off"}),
    ("--augment", "augment", {"action": argparse.BooleanOptionalAction}),
    ("--train-lane-labels", "train_lane_labels", {"choices": LANE_LABELS}),
    ("--val-lane-labels", "val_lane_labels", {"choices": LANE_LABELS}),
    ("--max-train-images", "max_train_images", {"type": int}),
    ("--max-val-images", "max_val_images", {"type": int}),
    ("--workers", "workers", {"type": int}),
    (
        "--skip-bad-images",
        "skip_bad_images",
        {"action": "store_true", "help": "drop samples with truncated files instead of stopping"},
    ),
    *LABEL_FLAGS,
    ("--eval-every", "eval_every", {"type": int, "help": "epochs between validations"}),
    ("--det-mode", "det_mode", {"choices": DET_MODES}),
    ("--seg-mode", "seg_mode", {"choices": SEG_MODES}),
    ("--best-metric", "best_metric", {"choices": BEST_METRICS}),
    ("--save-every", "save_every", {"type": int, "help": "also save last.pt every N steps"}),
    (
        "--stop-after-epochs",
        "stop_after_epochs",
        {"type": int, "help": "end this session after N epochs"},
    ),
    ("--seed", "seed", {"type": int}),
    ("--device", "device", {"help": "auto, cpu, cuda, cuda:N"}),
    ("--progress", "progress", {"action": argparse.BooleanOptionalAction}),
]


def _loss_flags() -> list[tuple[str, str, dict]]:
    """One flag per loss option of the registered models; its help names the models whose loss
    has it, with their defaults."""
    owners: dict[str, list[tuple[str, object]]] = {}
    for name in list_models():
        for f in fields(get_spec(name).loss_config):
            owners.setdefault(f.name, []).append((name, f.default))
    out = []
    for option, models in owners.items():
        kind = {"nargs": "+"} if isinstance(models[0][1], tuple) else {}
        shown = ", ".join(f"{m} {default_help('', d).strip(' ()')}" for m, d in models)
        help_text = f"loss option ({shown})"
        out.append((f"--{option.replace('_', '-')}", f"loss.{option}", {**kind, "help": help_text}))
    return out


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="mtc-train", description=__doc__.split("\n\n")[0])
    fields_ = TrainConfig.__dataclass_fields__
    for flag, dest, opts in FLAGS:
        names = [flag, "--out"] if flag == "-o" else [flag]
        if "type" in opts and "metavar" not in opts:
            opts = {**opts, "metavar": dest.upper()}
        opts = {**opts, "help": default_help(opts.get("help"), fields_[dest].default)}
        p.add_argument(*names, dest=dest, default=S, **opts)
    for flag, dest, opts in _loss_flags():
        metavar = dest.split(".")[-1].upper()
        p.add_argument(
            flag, dest=dest.replace(".", "__"), default=S, type=float, metavar=metavar, **opts
        )
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    given = {k.replace("__", "."): v for k, v in vars(args).items()}
    loss = {k.split(".", 1)[1]: v for k, v in given.items() if k.startswith("loss.")}
    top = {k: v for k, v in given.items() if not k.startswith("loss.")}
    if "resume" in top:
        if loss:
            top["loss"] = loss  # refused by for_resume with a message naming the field
        return resume_config(top.pop("resume"), **top)
    if loss:
        top["loss"] = loss  # checked against the trained model's loss options
    return TrainConfig(**top)


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv, prog="mtc-train")


def _check_paths(args: argparse.Namespace) -> None:
    """Inputs exist, before a checkpoint is read (the output folder is checked next)."""
    for flag, dest, what in (
        ("--resume", "resume", "the last.pt of a run"),
        ("--init", "init", "a checkpoint (.pt)"),
        ("--data", "data", "a data set root"),
    ):
        if getattr(args, dest, None):
            check_input_path(getattr(args, dest), flag, what)


def interrupted_text(out: str | Path) -> str:
    """What an interrupted run kept and the command that continues it."""
    last = Path(out) / "last.pt"
    if last.is_file():
        return f"kept {last}; continue with: mtc-train --resume {last}"
    return (
        f"no checkpoint was written yet in {out} (last.pt is saved after each epoch, or every "
        "--save-every steps); run the same command again to start over"
    )


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    _check_paths(args)
    cfg = config_from_args(args)
    check_output_dir(cfg.out, "-o")
    try:
        result = train(cfg)
    except KeyboardInterrupt:
        raise CliInterrupted(interrupted_text(cfg.out)) from None
    if result.rank != 0:
        return 0
    if result.already_finished:
        print(
            f"nothing to do: the run in {result.out_dir} already finished its {result.epochs_done}"
            f" epochs; best: {result.best or 'not saved (no validation ran)'}; to train longer "
            f"resume with a larger --epochs"
        )
        return 0
    if result.metrics is not None:
        print(eval_text(result.metrics))
    print(
        f"last: {result.last}  best: {result.best}  ({result.epochs_done} epochs, "
        f"{result.steps} steps)  report: {result.out_dir / 'metrics.json'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
