"""A sampler whose order is a pure function of (seed, epoch), sharded across DDP ranks, that can
start in the middle of an epoch — what exact resume needs (a stateful shuffling generator would
have to be saved and replayed instead)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochSampler(Sampler[int]):
    """Shuffle with `seed + epoch`, pad to a multiple of `world` (every rank gets the same
    number of batches, or DDP would hang), take this rank's strided share, skip `skip` samples."""

    def __init__(self, n: int, shuffle: bool, seed: int, rank: int = 0, world: int = 1) -> None:
        self.n = int(n)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.rank = int(rank)
        self.world = int(world)
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Select the epoch; `skip` samples of this rank's share are dropped (mid-epoch resume)."""
        self.epoch = int(epoch)
        self.skip = int(skip)

    def per_rank(self) -> int:
        return -(-self.n // self.world)

    def _order(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        total = self.per_rank() * self.world
        order += order[: total - len(order)]
        return order[self.rank : total : self.world]

    def __iter__(self) -> Iterator[int]:
        return iter(self._order()[self.skip :])

    def __len__(self) -> int:
        return max(0, self.per_rank() - self.skip)
