"""The training loop: the one entry point for the teacher, the pruned student and DDP runs.

`train(cfg, model, loss_fn, extension, init_checkpoint_fields)` owns data, optimisation, EMA,
AMP, DDP, checkpoints and exact resume; distillation rides on it through a `TrainExtension`.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from compressor.checkpoint import save_checkpoint
from compressor.losses import total_loss
from compressor.models.registry import spec_of
from compressor.train.config import TrainConfig
from compressor.train.ddp import (
    DistContext,
    TrainModule,
    all_reduce_mean,
    any_rank,
    barrier,
    cleanup,
    init_distributed,
    wrap,
)
from compressor.train.evaluate import EvalConfig, evaluate
from compressor.train.extension import TrainExtension
from compressor.train.optim import ModelEMA, build_optimizer, build_scheduler, refresh_schedule
from compressor.train.report import write_training_report
from compressor.train.setup import (
    build_data,
    check_batch_before_loading,
    check_out_dir,
    load_model,
    run_loss_config,
)
from compressor.train.state import (
    Progress,
    Stateful,
    build_train_state,
    restore_train_state,
    seed_everything,
)
from runtime.cli_kernel import remove_empty_dir
from runtime.errors import MtcError

LossFn = Callable[[dict, dict], dict[str, torch.Tensor]]


class NonFiniteLossError(MtcError):
    """A loss became NaN/inf: training stops, the last good checkpoint is kept."""


@dataclass
class TrainResult:
    out_dir: Path
    last: Path | None
    best: Path | None
    best_score: float | None
    epochs_done: int
    steps: int
    history: list = field(default_factory=list)
    metrics: dict | None = None  # full report of the last validation
    model: nn.Module | None = None  # the trained model (raw weights), unwrapped
    deploy_model: nn.Module | None = None  # what checkpoints hold: the EMA model when EMA is on
    rank: int = 0  # under DDP every rank returns; only rank 0 should print
    already_finished: bool = False  # a resume of a run that had done all its epochs


def train(
    cfg: TrainConfig,
    model: nn.Module | None = None,
    loss_fn: LossFn | None = None,
    extension: TrainExtension | None = None,
    init_checkpoint_fields: dict | None = None,
) -> TrainResult:
    """Train `model` (default: built from cfg, or cfg.init / cfg.resume) with `loss_fn`
    (default: the model spec's loss, its options overridden by cfg.loss). `init_checkpoint_fields`
    (e.g. the pruning record) go into every checkpoint written, so `load_checkpoint` rebuilds a
    pruned model."""
    ctx = init_distributed(cfg.device)
    existed = Path(cfg.out).exists()
    try:
        trainer = Trainer(cfg, ctx, model, loss_fn, extension, init_checkpoint_fields)
        try:
            return trainer.run()
        finally:
            trainer.close()
    except BaseException:
        if ctx.is_main:
            remove_empty_dir(cfg.out, existed)  # a failed first epoch leaves no empty folder
        raise
    finally:
        cleanup(ctx)


# What a training run writes into its folder; --overwrite removes these (and only these).
RUN_FILES = ("last.pt", "best.pt", "metrics.json", "metrics.md")


def remove_stale_run_files(out: Path) -> None:
    """--overwrite: drop the previous run's files so none of them is taken for the new run's."""
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)


class Trainer:
    """One run's state and steps; `train` is the public entry point."""

    def __init__(
        self,
        cfg: TrainConfig,
        ctx: DistContext,
        model: nn.Module | None,
        loss_fn: LossFn | None,
        extension: TrainExtension | None,
        extra_fields: dict | None,
    ) -> None:
        seed_everything(cfg.seed)
        self.cfg, self.ctx = cfg, ctx
        self.out = Path(cfg.out)
        check_out_dir(cfg)
        check_batch_before_loading(cfg, ctx)
        src = load_model(cfg, model, extra_fields)
        loss_config = run_loss_config(cfg, src.model, loss_fn)  # before any data is read
        self.data = build_data(cfg, ctx, src.fields.get("preprocess"))
        self.fields = src.fields
        self.model = src.model.to(ctx.device).train()
        # EMA copy before attach: a deepcopy would otherwise clone the extension's hooks.
        ema = ModelEMA(self.model, cfg.ema_decay, cfg.ema_tau) if cfg.ema else None
        self.extension = extension
        self._attached = False
        if extension is not None:
            extension.attach(self.model)
            self._attached = True
            extension.to(ctx.device)
        self.loss_fn = loss_fn or spec_of(self.model).loss(self.model, loss_config)
        self.module = wrap(TrainModule(self.model, extension), ctx)
        self.steps_per_epoch = len(self.data.loader)
        trained = [self.model] + ([extension] if extension is not None else [])
        self.params = [p for m in trained for p in m.parameters() if p.requires_grad]
        optimizer = build_optimizer(cfg, trained)
        scheduler = build_scheduler(cfg, optimizer, self.steps_per_epoch)
        scaler = torch.amp.GradScaler("cuda") if cfg.amp and ctx.device.type == "cuda" else None
        self.parts = Stateful(self.model, optimizer, scheduler, scaler, ema, extension)
        self.progress = Progress()
        if src.resume_state is not None:
            self.progress = restore_train_state(self.parts, src.resume_state, cfg.resume)
            refresh_schedule(scheduler, cfg, self.steps_per_epoch)
        self.report: dict | None = None
        self.last: Path | None = Path(cfg.resume) if cfg.resume else None
        self.best: Path | None = None
        if cfg.resume and (self.out / "best.pt").is_file():
            self.best = self.out / "best.pt"

    @property
    def deploy_model(self) -> nn.Module:
        return self.parts.ema.module if self.parts.ema is not None else self.model

    def run(self) -> TrainResult:
        cfg, p = self.cfg, self.progress
        if self.ctx.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            if cfg.overwrite and not cfg.resume:
                remove_stale_run_files(self.out)
        end = (
            cfg.epochs
            if cfg.stop_after_epochs is None
            else min(cfg.epochs, p.epoch + cfg.stop_after_epochs)
        )
        finished = bool(cfg.resume) and p.epoch >= cfg.epochs
        while p.epoch < end:
            losses, seconds = self._train_epoch()
            self._end_epoch(losses, seconds)
        self._sync_buffers()
        return TrainResult(
            self.out,
            self.last,
            self.best,
            p.best_score,
            p.epoch,
            p.step,
            p.history,
            self.report,
            self.model,
            self.deploy_model,
            self.ctx.rank,
            finished,
        )

    def close(self) -> None:
        if self.extension is not None and self._attached:
            self.extension.detach()
            self._attached = False

    # --- one epoch -------------------------------------------------------------------------
    def _train_epoch(self) -> tuple[dict[str, float], float]:
        cfg, p, start = self.cfg, self.progress, time.perf_counter()
        self.data.sampler.set_epoch(p.epoch, skip=p.epoch_step * cfg.batch)
        self.data.train.set_epoch(p.epoch)
        sums: dict[str, float] = defaultdict(float)
        n = 0
        bar = tqdm(
            self.data.loader,
            desc=f"epoch {p.epoch + 1}/{cfg.epochs}",
            initial=p.epoch_step,
            total=self.steps_per_epoch,
            disable=not (self.ctx.is_main and cfg.progress),
        )
        for batch in bar:
            logs = self._step(batch)
            p.step += 1
            p.epoch_step += 1
            n += 1
            for k, v in logs.items():
                sums[k] += v
            bar.set_postfix({k: f"{logs[k]:.3f}" for k in ("det", "drivable", "lane") if k in logs})
            if (
                cfg.save_every
                and p.step % cfg.save_every == 0
                and p.epoch_step < self.steps_per_epoch
            ):
                self._save_last()
        bar.close()
        means = {k: v / max(n, 1) for k, v in sums.items()}
        return all_reduce_mean(self.ctx, means), time.perf_counter() - start

    def _step(self, batch: dict) -> dict[str, float]:
        dev, parts = self.ctx.device, self.parts
        batch = {
            k: v.to(dev, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()
        }
        if self.cfg.cpu_bf16 and dev.type == "cpu":
            # the network in bfloat16, the losses in float32 (bf16 sums lose the small terms)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                outputs, terms = self.module(batch["images"])
            outputs, terms = _float32(outputs), _float32(terms)
            losses = self.loss_fn(outputs, batch)
        else:
            with torch.autocast(dev.type, enabled=parts.scaler is not None):
                outputs, terms = self.module(batch["images"])
                losses = self.loss_fn(outputs, batch)
        named = {**losses, **terms}
        self._check_finite(named)
        total = total_loss(named)
        parts.optimizer.zero_grad(set_to_none=True)
        if parts.scaler is not None:
            parts.scaler.scale(total).backward()
            parts.scaler.unscale_(parts.optimizer)
        else:
            total.backward()
        if self.cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        if parts.scaler is not None:
            parts.scaler.step(parts.optimizer)
            parts.scaler.update()
        else:
            parts.optimizer.step()
        parts.scheduler.step()
        if parts.ema is not None:
            parts.ema.update(self.model)
        logs = {k: float(v.detach()) for k, v in named.items()}
        logs["total"] = float(total.detach())
        logs.update(getattr(self.loss_fn, "components", {}) or {})
        return logs

    def _check_finite(self, named: dict[str, torch.Tensor]) -> None:
        bad = [k for k, v in named.items() if not bool(torch.isfinite(v.detach()).all())]
        if not any_rank(self.ctx, bool(bad)):
            return
        p = self.progress
        where = ", ".join(f"{k}={float(named[k].detach())}" for k in bad) or "on another rank"
        kept = (
            f"the last good checkpoint is {self.last}"
            if self.last
            else "no checkpoint was written yet"
        )
        raise NonFiniteLossError(
            f"loss is not finite at step {p.step + 1} (epoch {p.epoch + 1}, batch {p.epoch_step + 1}): "
            f"{where}; {kept}. Lower --lr, keep --grad-clip on, or check the labels of that batch"
        )

    # --- end of epoch: validate, checkpoint, report ---------------------------------------
    def _end_epoch(self, losses: dict[str, float], seconds: float) -> None:
        cfg, p = self.cfg, self.progress
        p.epoch += 1
        p.epoch_step = 0
        record = {
            "epoch": p.epoch,
            "step": p.step,
            "lr": self.parts.optimizer.param_groups[0]["lr"],
            "time_s": seconds,
            "train": losses,
            "val": None,
        }
        is_best = False
        if self._should_eval():
            summary = self._validate()
            if summary is not None:
                record["val"] = summary
                score = (
                    summary["score"] if cfg.best_metric == "mean" else summary.get(cfg.best_metric)
                )
                is_best = score is not None and (p.best_score is None or score > p.best_score)
                record["score"] = score
                if is_best:
                    p.best_score, record["best"] = float(score), True
        p.history.append(record)
        self._save_last()
        if is_best and self.ctx.is_main:
            self.best = self.out / "best.pt"
            self._save(self.best, with_state=False)
        if self.ctx.is_main:
            self._write_report()
        barrier(self.ctx)

    def _should_eval(self) -> bool:
        p, cfg = self.progress, self.cfg
        return p.epoch == cfg.epochs or (cfg.eval_every > 0 and p.epoch % cfg.eval_every == 0)

    def _validate(self) -> dict | None:
        """Rank 0 scores the full val split with the deployed (EMA) weights; others wait."""
        if self.ctx.is_main:
            ecfg = EvalConfig(
                det_mode=self.cfg.det_mode,
                seg_mode=self.cfg.seg_mode,
                amp=self.parts.scaler is not None,
                progress=self.cfg.progress,
            )
            self.report = evaluate(self.deploy_model, self.data.val_loader, ecfg)
        barrier(self.ctx)
        return self.report["summary"] if self.report is not None else None

    def _save_last(self) -> None:
        if self.ctx.is_main:
            self.last = self.out / "last.pt"
            self._save(self.last, with_state=True)

    def _save(self, path: Path, with_state: bool) -> None:
        p = self.progress
        fields = dict(self.fields)
        fields["provenance"] = {
            **(fields.get("provenance") or {}),
            "stage": "train",
            "data": self.cfg.data,
            "epochs_done": p.epoch,
            "step": p.step,
        }
        fields["metrics"] = self.report["summary"] if self.report else {}
        if with_state:
            fields["train_state"] = build_train_state(self.parts, p, self.cfg, self.ctx.world)
        save_checkpoint(path, self.deploy_model, **fields)

    def _write_report(self) -> None:
        p = self.progress
        best = next((h for h in reversed(p.history) if h.get("best")), None)
        payload = {
            "name": self.out.name,
            "config": self.cfg.to_dict(),
            "world_size": self.ctx.world,
            "epochs_done": p.epoch,
            "steps": p.step,
            "history": p.history,
            "best_metric": self.cfg.best_metric,
            "best": {"epoch": best["epoch"], "score": best["score"]} if best else None,
            "final": self.report,
            "checkpoints": {
                "last": str(self.last) if self.last else None,
                "best": str(self.out / "best.pt") if best else None,
            },
        }
        write_training_report(self.out, payload)

    def _sync_buffers(self) -> None:
        """BN statistics are updated locally by each rank's last forward; give every rank rank
        0's, so all ranks end with the model that was saved."""
        if not self.ctx.distributed:
            return
        for b in self.model.buffers():
            dist.broadcast(b.data, src=0)


def _float32(tree):
    """Floating tensors of a nested output (tensors, lists, tuples, dicts) as float32."""
    if torch.is_tensor(tree):
        return tree.float() if tree.is_floating_point() else tree
    if isinstance(tree, dict):
        return {k: _float32(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        items = [_float32(v) for v in tree]
        return type(tree)(*items) if hasattr(tree, "_fields") else type(tree)(items)
    return tree
