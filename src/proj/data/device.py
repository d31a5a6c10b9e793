"""The device-resident data path for small datasets (`data.init_args.device_resident: true`).

The whole training split is moved once to the training device; every batch is then one indexing operation
on it: no DataLoader workers, no per-sample __getitem__, no collation, no host-to-device copy per step.
Shuffling uses its own generator seeded by (seed, epoch), so every rank draws the same order and a resumed
run the same batches; under DDP each rank takes its own share, padded to equal length as torch's
DistributedSampler does. Lightning calls `set_epoch` (found as `.sampler.set_epoch`) at every epoch start.
Lightning keeps its `state_dict` (the epoch and the batches handed out) in checkpoints and gives it back to
a run resumed mid-epoch, which then continues with the next batch of the same order.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from proj.data.sampling import epoch_generator


class DeviceBatches:
    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        order: Sequence[int] | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        """order: the indices of one epoch before shuffling (a resampling sampler's draw); default all."""
        self.x, self.y = x, y
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.order = order
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.sampler = self  # where Lightning looks for set_epoch
        self.yielded = 0  # batches handed out in this epoch
        self.resume_at: tuple[int, int] | None = None  # (epoch, batch) from a checkpoint

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def epoch_indices(self) -> Tensor:
        order = self.order
        if callable(getattr(order, "set_epoch", None)):  # a resampling sampler: redraw for this epoch
            order.set_epoch(self.epoch)
        indices = torch.as_tensor(list(order) if order is not None else range(len(self.y)), dtype=torch.long)
        if self.shuffle:
            indices = indices[torch.randperm(len(indices), generator=epoch_generator(self.seed, self.epoch))]
        per_rank = math.ceil(len(indices) / self.world_size)
        padded = torch.cat([indices, indices[: per_rank * self.world_size - len(indices)]])
        return padded[self.rank :: self.world_size]

    def __len__(self) -> int:
        total = len(self.order) if self.order is not None else len(self.y)
        return math.ceil(math.ceil(total / self.world_size) / self.batch_size)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "batches": self.yielded}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.resume_at = (state_dict["epoch"], state_dict["batches"])

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        # A generator: nothing runs before the first batch is asked for, after Lightning's `set_epoch`.
        epoch, self.yielded = self.epoch, 0
        if self.resume_at is not None and self.resume_at[0] == epoch:
            self.yielded = self.resume_at[1]  # resumed mid-epoch: the batches before it are done
        self.resume_at = None
        indices = self.epoch_indices().to(self.x.device)
        for start in range(self.yielded * self.batch_size, len(indices), self.batch_size):
            self.yielded += 1
            batch = indices[start : start + self.batch_size]
            yield self.x[batch], self.y[batch]
