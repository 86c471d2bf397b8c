"""DistillConfig: every choice of head-agnostic feature distillation, including each *(ours)*
option of METHOD.md. Validated on construction."""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass

from runtime.errors import MtcError

FEATURE_LOSSES = ("mse", "cosine", "attention")
ADAPTER_INITS = ("lstsq", "random")


class DistillConfigError(MtcError):
    """A DistillConfig value outside its valid range."""


@dataclass(frozen=True)
class DistillConfig:
    """taps: tap names (a model's `feature_info` names, or module paths for a model without
        feature_info); empty = every feature_info tap.
    loss: mse (on per-channel normalised features when `normalize`) | cosine | attention.
    kd_weight: lambda_kd in L = sum_t L_t + lambda_kd * sum_taps loss(adapter(F_s), F_t).
    adapter_bn: 1x1 conv adapters with BatchNorm (else conv with bias).
    adapter_init: lstsq = fit each adapter by ridge least squares on the first training batch
        (student -> teacher features) *(ours)*; random = Kaiming init.
    epochs / lr / weight_decay: only for the generic batch loop (`distill(..., batches=...)`);
        with a TrainConfig the trainer's settings apply.
    """

    taps: tuple[str, ...] = ()
    loss: str = "mse"
    normalize: bool = True
    kd_weight: float = 1.0
    adapter_bn: bool = True
    adapter_init: str = "lstsq"
    epochs: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "taps", tuple(self.taps))
        if self.loss not in FEATURE_LOSSES:
            close = difflib.get_close_matches(str(self.loss), FEATURE_LOSSES, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise DistillConfigError(
                f"loss {self.loss!r} is not one of {', '.join(FEATURE_LOSSES)}{hint}"
            )
        if self.adapter_init not in ADAPTER_INITS:
            raise DistillConfigError(
                f"adapter_init {self.adapter_init!r} is not one of {', '.join(ADAPTER_INITS)}"
            )
        if self.kd_weight < 0:
            raise DistillConfigError(f"kd_weight must be >= 0, got {self.kd_weight}")
        if self.epochs < 1:
            raise DistillConfigError(f"epochs must be >= 1, got {self.epochs}")
        if self.lr <= 0:
            raise DistillConfigError(f"lr must be > 0, got {self.lr}")
        if len(set(self.taps)) != len(self.taps):
            raise DistillConfigError(f"taps has duplicates: {list(self.taps)}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["taps"] = list(self.taps)
        return d
