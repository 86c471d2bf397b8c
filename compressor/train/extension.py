"""The one seam between the training loop and what rides on it (feature distillation today).

The trainer owns data, optimisation, DDP, checkpoints, resume and progress. An extension adds
trainable modules (e.g. distillation adapters) and extra loss terms, without the trainer knowing
what they are. Its parameters are optimised with the model's, synchronised under DDP (the
trainer wraps model and extension in one module), and saved in the *training* state for resume —
never in the exported model.
"""

from __future__ import annotations

import torch
from torch import nn


class TrainExtension(nn.Module):
    """Base class. Subclasses keep frozen helpers (e.g. a teacher) out of the module tree
    (store them with `object.__setattr__`) so only trainable parts are optimised and saved."""

    def attach(self, model: nn.Module) -> None:
        """Called once with the (unwrapped) student before training, e.g. to register forward
        hooks on its tap modules."""

    def detach(self) -> None:
        """Called once after training: remove hooks."""

    def forward(self, images: torch.Tensor, outputs: dict) -> dict[str, torch.Tensor]:
        """Extra loss terms for this batch, already weighted, keyed by name (e.g. {"kd": t}).
        Called right after the student's forward on `images` in the same step."""
        return {}
