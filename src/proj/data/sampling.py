"""Resampling for imbalanced classes: a sampler that rebalances the training split each epoch.

Lightning wraps a custom sampler in a DistributedSamplerWrapper under DDP (`use_distributed_sampler`), which
draws the whole epoch's index list on every rank and hands each rank its own share. That only works if every
rank draws the same list, so the sampler is seeded by (seed, epoch) rather than by the global RNG. Lightning
calls `set_epoch` at the start of each epoch, which also makes a resumed run draw what it would have drawn.
"""

from collections.abc import Iterator
from typing import Literal

import torch
from torch.utils.data import Sampler

SamplerMode = Literal["none", "oversample", "undersample", "balanced"]


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
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
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


def balanced_class_weights(labels: torch.Tensor, num_classes: int) -> list[float]:
    """n_samples / (n_classes * count_c): scikit-learn's 'balanced' weights, for a class-weighted loss."""
    counts = torch.bincount(torch.as_tensor(labels), minlength=num_classes).double()
    if (counts == 0).any():
        missing = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(f"classes {missing} have no training sample: class weights would be infinite")
    return (counts.sum() / (num_classes * counts)).tolist()
