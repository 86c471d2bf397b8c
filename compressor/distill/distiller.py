"""Head-agnostic feature distillation as a TrainExtension.

The extension holds the frozen teacher *outside* its module tree (so the trainer neither
optimises, moves into DDP, nor saves it) and the 1x1 adapters *inside* it (so they are trained,
synchronised under DDP and kept in the training state for resume, but never in the student).
Only tap features are matched, never head outputs: that is what makes it work for any mix of
heads. `distill()` runs it through `compressor.train.train` (DDP, resume, checkpoints) or, for a
model and data the trainer does not know, through a plain loop over given batches."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from compressor.distill.adapters import adapter_key, build_adapters, fit_adapter
from compressor.distill.config import DistillConfig, DistillConfigError
from compressor.distill.losses import build_feature_loss
from compressor.distill.taps import Tap, TapMismatchError, capture, check_alignment, probe_taps
from compressor.pruning.calibrate import batch_images, to_device
from compressor.train.extension import TrainExtension


def freeze_teacher(teacher: nn.Module) -> nn.Module:
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


class DistillExtension(TrainExtension):
    """KD term lambda_kd * sum_taps loss(adapter(F_s), F_t) for the training loop."""

    def __init__(
        self,
        teacher: nn.Module,
        student: nn.Module,
        cfg: DistillConfig | None = None,
        example_inputs: torch.Tensor | None = None,
        input_hw: tuple[int, int] = (64, 64),
    ):
        super().__init__()
        self.cfg = cfg or DistillConfig()
        example = example_inputs if example_inputs is not None else torch.zeros(1, 3, *input_hw)
        object.__setattr__(self, "teacher", freeze_teacher(teacher))
        self._probe_shape = tuple(example.shape[1:])
        self.teacher_taps: list[Tap] = probe_taps(teacher, self.cfg.taps, example)
        self.student_taps: list[Tap] = probe_taps(student, self.cfg.taps, example)
        check_alignment(self.teacher_taps, self.student_taps)
        self.adapters = build_adapters(self.student_taps, self.teacher_taps, self.cfg.adapter_bn)
        # a buffer, so a resumed run (extension state restored) does not fit the adapters again
        self.register_buffer("adapters_fitted", torch.tensor(self.cfg.adapter_init != "lstsq"))
        self._loss = build_feature_loss(self.cfg.loss, self.cfg.normalize)
        self._s_feats: dict[str, torch.Tensor] = {}
        self._t_feats: dict[str, torch.Tensor] = {}
        self._handles: list = []

    @property
    def tap_names(self) -> list[str]:
        return [t.name for t in self.student_taps]

    def attach(self, model: nn.Module) -> None:
        """Hook the student's tap modules (and the teacher's); checks the student is the one the
        adapters were built for."""
        self.detach()
        live = {t.name: t for t in probe_taps(model, self.tap_names, self._probe_like())}
        for t in self.student_taps:
            if live[t.name].channels != t.channels:
                raise TapMismatchError(
                    f"attach() got a model whose tap {t.name!r} has {live[t.name].channels} "
                    f"channels; the adapters were built for {t.channels}: attach the student "
                    "this extension was created with"
                )
        self._handles = capture(model, {t.name: t.module for t in self.student_taps}, self._s_feats)
        self._handles += capture(
            self.teacher, {t.name: t.module for t in self.teacher_taps}, self._t_feats
        )

    def _probe_like(self) -> torch.Tensor:
        return torch.zeros(1, *self._probe_shape)

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self._s_feats.clear()
        self._t_feats.clear()

    def forward(self, images: torch.Tensor, outputs: dict) -> dict[str, torch.Tensor]:
        teacher = self.teacher
        if next(teacher.parameters()).device != images.device:
            teacher.to(images.device)
        teacher.eval()
        with torch.no_grad():
            teacher(images)
        missing = [n for n in self.tap_names if n not in self._s_feats]
        if missing:
            raise TapMismatchError(
                f"no student features for taps {missing}: call attach(student) before training"
            )
        if not bool(self.adapters_fitted):
            self._fit_adapters()
        total = images.new_zeros((), dtype=torch.float32)
        for name in self.tap_names:
            s = self.adapters[adapter_key(name)](self._s_feats[name].float())
            total = total + self._loss(s, self._t_feats[name].float())
        self._s_feats.clear()
        self._t_feats.clear()
        return {"kd": self.cfg.kd_weight * total}

    def _fit_adapters(self) -> None:
        """Least-squares adapter init on this (first) batch; under DDP rank 0's fit is broadcast
        so every replica starts identical."""
        for name in self.tap_names:
            fit_adapter(self.adapters[adapter_key(name)], self._s_feats[name], self._t_feats[name])
        if dist.is_available() and dist.is_initialized():
            for t in list(self.adapters.parameters()) + list(self.adapters.buffers()):
                dist.broadcast(t.data, src=0)
        self.adapters_fitted.fill_(True)


@dataclass
class DistillResult:
    """The distilled student, the extension (adapters; not part of the student) and history.
    `train_result` is the trainer's result when run through compressor.train.train."""

    student: nn.Module
    extension: DistillExtension
    history: list[dict] = field(default_factory=list)
    train_result: object | None = None


def _fit(student, ext, loss_fn, batches, cfg: DistillConfig, progress: bool) -> list[dict]:
    """Plain loop for models/data the trainer does not know: no DDP, resume or checkpoints."""
    params = [p for m in (student, ext) for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    history = []
    device = next(student.parameters()).device
    ext.to(device)
    ext.attach(student)
    try:
        for epoch in range(cfg.epochs):
            sums: dict[str, float] = {}
            n = 0
            student.train()
            ext.train()
            for batch in tqdm(
                batches, desc=f"distill {epoch + 1}/{cfg.epochs}", disable=not progress, leave=False
            ):
                batch = to_device(batch, device)
                images = batch_images(batch)
                outputs = student(images)
                terms = {**loss_fn(outputs, batch), **ext(images, outputs)}
                total = torch.stack([v.reshape(()) for v in terms.values()]).sum()
                if not math.isfinite(float(total.detach())):
                    raise DistillConfigError(
                        f"loss became {float(total.detach())} at epoch {epoch + 1}; "
                        "lower lr or kd_weight"
                    )
                opt.zero_grad(set_to_none=True)
                total.backward()
                opt.step()
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
                n += 1
            history.append({"epoch": epoch + 1, **{k: v / max(n, 1) for k, v in sums.items()}})
    finally:
        ext.detach()
    return history


def distill(
    teacher: nn.Module,
    student: nn.Module,
    loss_fn=None,
    cfg: DistillConfig | None = None,
    *,
    batches: Iterable | None = None,
    train_cfg=None,
    taps: Sequence[str] | None = None,
    example_inputs: torch.Tensor | None = None,
    init_checkpoint_fields: dict | None = None,
    progress: bool = True,
) -> DistillResult:
    """Train `student` on its task losses plus feature distillation from the frozen `teacher`.

    Give `train_cfg` (a compressor.train.TrainConfig) to run the full training loop (DDP, resume,
    checkpoints; loss_fn None = the model spec's loss), or `batches` (a re-iterable of dicts with 'images'
    or tensors) with a per-task `loss_fn` for any model. Taps (`taps=` overrides cfg.taps),
    adapters and the KD loss come from `cfg`; teacher/student taps are checked before any
    training step."""
    cfg = cfg or DistillConfig()
    if taps is not None:
        cfg = replace(cfg, taps=tuple(taps))
    if (batches is None) == (train_cfg is None):
        raise DistillConfigError(
            "give exactly one of batches= (plain loop) or train_cfg= (compressor.train.train)"
        )
    if example_inputs is None:
        if train_cfg is not None:
            example_inputs = torch.zeros(1, 3, *train_cfg.imgsz)
        else:
            example_inputs = batch_images(next(iter(batches)))[:1]
    ext = DistillExtension(teacher, student, cfg, example_inputs)
    if train_cfg is not None:
        from compressor.train import train

        result = train(
            train_cfg,
            model=student,
            loss_fn=loss_fn,
            extension=ext,
            init_checkpoint_fields=init_checkpoint_fields,
        )
        return DistillResult(result.deploy_model, ext, result.history, result)
    if loss_fn is None:
        raise DistillConfigError("the batch loop needs a per-task loss_fn (outputs, batch) -> dict")
    history = _fit(student, ext, loss_fn, batches, cfg, progress)
    return DistillResult(student, ext, history)
