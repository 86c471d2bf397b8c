"""Distributed data parallel plumbing on top of torch.distributed (no home-made distribution).

The same entry point runs alone or under `torchrun --nproc_per_node N`: torchrun sets RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT and we join with the env:// rendezvous (NCCL on GPU,
gloo on CPU). Only rank 0 writes files, logs and draws progress bars.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from compressor.train.extension import TrainExtension
from runtime.errors import MtcError


class DeviceError(MtcError):
    """A device that does not exist on this machine was asked for."""


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialised_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """`auto` -> this rank's GPU when CUDA is available, else CPU; anything else is checked."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {name!r} asked for but CUDA is not available; use --device cpu"
            )
        index = local_rank if device.index is None else device.index
        if index >= torch.cuda.device_count():
            raise DeviceError(
                f"device cuda:{index} does not exist ({torch.cuda.device_count()} GPU(s) visible)"
            )
        device = torch.device("cuda", index)
        torch.cuda.set_device(device)
    return device


def init_distributed(device_name: str) -> DistContext:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1), else run alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(device=resolve_device(device_name))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    joined = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, init_method="env://")
        joined = True
    return DistContext(rank, world, local_rank, device, joined)


def cleanup(ctx: DistContext) -> None:
    if ctx.initialised_here and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def all_reduce_mean(ctx: DistContext, values: dict[str, float]) -> dict[str, float]:
    """Mean of per-rank scalars (e.g. epoch loss means) across ranks."""
    if not ctx.distributed or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=_comm_device(ctx))
    dist.all_reduce(t)
    return {k: float(v) / ctx.world for k, v in zip(keys, t.tolist())}


def any_rank(ctx: DistContext, flag: bool) -> bool:
    """True if `flag` is true on any rank: every rank must take the same branch (e.g. stop on
    a non-finite loss) or the others would wait forever in the next all-reduce."""
    if not ctx.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=_comm_device(ctx))
    dist.all_reduce(t)
    return bool(t.item() > 0)


def _comm_device(ctx: DistContext) -> torch.device:
    return ctx.device if dist.get_backend() == "nccl" else torch.device("cpu")


class TrainModule(nn.Module):
    """Model and extension in one module, so one DDP wrapper synchronises the gradients of both
    (e.g. distillation adapters) and the extension's terms are part of the forward graph."""

    def __init__(self, model: nn.Module, extension: TrainExtension | None) -> None:
        super().__init__()
        self.model = model
        self.extension = extension

    def forward(self, images: torch.Tensor) -> tuple[dict, dict[str, torch.Tensor]]:
        outputs = self.model(images)
        terms = self.extension(images, outputs) if self.extension is not None else {}
        return outputs, terms


def wrap(module: TrainModule, ctx: DistContext, find_unused: bool = False) -> nn.Module:
    if not ctx.distributed:
        return module
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(
        module, device_ids=ids, find_unused_parameters=find_unused
    )
