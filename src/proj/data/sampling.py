"""The training order: samplers that rebalance or shuffle each epoch, and a DataLoader that resumes mid-epoch.

Lightning wraps a custom sampler in a DistributedSamplerWrapper under DDP (`use_distributed_sampler`), which
draws the whole epoch's index list on every rank and hands each rank its own share. That only works if every
rank draws the same list, so the samplers are seeded by (seed, epoch) rather than by the global RNG. Lightning
calls `set_epoch` at the start of each epoch, which also makes a resumed run draw what it would have drawn.

The global RNG is left alone on purpose: a DataLoader's RandomSampler and its iterator's base seed draw from
it when an epoch starts, so a run resumed mid-epoch (whose iterator starts at the resume) would shift every
dropout and augmentation draw after it.
"""

import os
from collections.abc import Iterator
from typing import Any, Literal

import torch
from torch.utils.data import DataLoader, Sampler

# smote and gan are not samplers: they add rows to the training split once, in setup (resampling.py and
# gan_oversampling.py)
SamplerMode = Literal["none", "oversample", "undersample", "balanced", "smote", "gan"]


class ClassBalancedSampler(Sampler[int]):
    """Indices into a labelled split, rebalanced per class.

    oversample:  every class drawn as often as the largest one (all originals, plus repeats drawn at random)
    undersample: every class cut to the size of the smallest one (a fresh random subset each epoch)
    balanced:    as many draws as the split has samples, with replacement, each class equally likely
    """

    def __init__(self, labels: torch.Tensor, mode: SamplerMode, seed: int = 0) -> None:
        if mode not in ("oversample", "undersample", "balanced"):
            raise ValueError(f"data.sampler={mode!r}: expected none, oversample, undersample or balanced")
        self.labels = torch.as_tensor(labels)
        self.mode = mode
        self.seed = seed
        self.epoch = 0
        self.by_class = [torch.nonzero(self.labels == c).flatten() for c in self.labels.unique()]
        counts = [len(idx) for idx in self.by_class]
        per_class = {"oversample": max(counts), "undersample": min(counts)}.get(mode)
        self.length = per_class * len(counts) if per_class else len(self.labels)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[int]:
        g = epoch_generator(self.seed, self.epoch)
        if self.mode == "balanced":
            weights = 1.0 / torch.bincount(self.labels).float()[self.labels]
            yield from torch.multinomial(weights, self.length, replacement=True, generator=g).tolist()
            return
        chosen = []
        target = self.length // len(self.by_class)
        for idx in self.by_class:
            if self.mode == "undersample":
                chosen.append(idx[torch.randperm(len(idx), generator=g)[:target]])
            else:
                extra = idx[torch.randint(len(idx), (target - len(idx),), generator=g)]
                chosen.append(torch.cat([idx, extra]))
        order = torch.cat(chosen)
        yield from order[torch.randperm(len(order), generator=g)].tolist()


def run_seed() -> int:
    """The run's seed: seed_everything's, which Lightning keeps in PL_GLOBAL_SEED for every rank (its own
    DistributedSampler reads it too). Not torch.initial_seed(): restoring a rank's RNG state changes that."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator that orders epoch `epoch`: the same on every rank, in every run with this seed."""
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


class EpochShuffle(Sampler[int]):
    """A random permutation of `size` indices each epoch, a pure function of (seed, epoch)."""

    def __init__(self, size: int, seed: int = 0) -> None:
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[int]:
        yield from torch.randperm(self.size, generator=epoch_generator(self.seed, self.epoch)).tolist()


class Keyed(Sampler[tuple[int, tuple[int, int, int]]]):
    """The indices of `order`, each with the key of its draw: (index, (seed, epoch, position in the epoch)). A
    dataset that augments each sample as it is read (proj.data.text) seeds its generator with the key, so its draws
    depend neither on the global RNG, nor on the worker, nor on whether the epoch was resumed in the middle."""

    def __init__(self, order: Sampler[int], seed: int) -> None:
        self.order, self.seed, self.own_epoch = order, seed, 0

    @property
    def epoch(self) -> int:
        return getattr(self.order, "epoch", self.own_epoch)  # the order's, or its own for a sampler without epochs

    def set_epoch(self, epoch: int) -> None:
        self.own_epoch = epoch
        if hasattr(self.order, "set_epoch"):
            self.order.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self) -> Iterator[tuple[int, tuple[int, int, int]]]:
        for position, index in enumerate(self.order):
            yield index, (self.seed, self.epoch, position)


class ResumableLoader(DataLoader):
    """A DataLoader that a run resumed mid-epoch continues where it stopped.

    Lightning saves the state of a training loader that has `state_dict` / `load_state_dict` in checkpoints
    and loads it back when it resumes mid-epoch; without it, the rest of the interrupted epoch would be its
    first batches again. The state is (epoch, batches handed out); the skipped batches are loaded and dropped.
    Build it with a `generator` so that its iterator draws its base seed there, not from the global RNG.
    """

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": getattr(self, "_epoch", 0), "batches": getattr(self, "_yielded", 0)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resume = (state_dict["epoch"], state_dict["batches"])

    def __iter__(self) -> Iterator[Any]:
        # A generator: nothing runs before the first batch is asked for, after Lightning's `set_epoch`.
        self._epoch, self._yielded = getattr(self.sampler, "epoch", 0), 0
        if self.generator is not None:  # worker seeds: a function of (seed, epoch), not of the epochs run before
            self._seed = getattr(self, "_seed", self.generator.initial_seed())
            self.generator.manual_seed(self._seed * 100_003 + self._epoch)
        epoch, skip = getattr(self, "_resume", (None, 0))
        self._resume = (None, 0)  # once: the next epoch starts at its beginning
        for batch in super().__iter__():
            self._yielded += 1
            if epoch != self._epoch or self._yielded > skip:
                yield batch


def balanced_class_weights(labels: torch.Tensor, num_classes: int) -> list[float]:
    """n_samples / (n_classes * count_c): scikit-learn's 'balanced' weights, for a class-weighted loss."""
    counts = torch.bincount(torch.as_tensor(labels), minlength=num_classes).double()
    if (counts == 0).any():
        missing = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(f"classes {missing} have no training sample: class weights would be infinite")
    return (counts.sum() / (num_classes * counts)).tolist()
