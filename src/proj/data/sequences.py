"""Variable-length sequences: samples of shape (time, features), each of its own length.

They are held as one array of every time step (steps, features) and the offset where each sample starts (the
layout of a ragged array, with no padding in memory). A batch pads its samples to its longest one and carries the
lengths and a mask of the real steps: `{"input": Padded(values, lengths, mask), "target": y}`. Nets for it
(proj.nets.sequence) take `net(values, lengths, mask)` and ignore the padded steps.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from proj.data.errors import DataError
from proj.nets.sequence import Padded, padding_mask


class Sequences(Dataset):
    """Labelled sequences in the ragged layout: sample i is steps[offsets[i]:offsets[i + 1]].

    Built with `from_arrays`, which checks every sample (a length of 0, another number of features, a NaN) and
    names the first bad one with its id, before anything is trained."""

    def __init__(self, steps: Tensor, offsets: Tensor, labels: Tensor, ids: Sequence[str]) -> None:
        self.steps, self.offsets, self.labels, self.ids = steps, offsets, labels, list(ids)

    @classmethod
    def from_arrays(cls, arrays: Sequence[Any], labels: Any, ids: Sequence[str]) -> Sequences:
        checked = [checked_sample(np.asarray(a), i, ids) for i, a in enumerate(arrays)]
        widths = {a.shape[1] for a in checked}
        if len(widths) > 1:
            first = checked[0].shape[1]
            i = next(i for i, a in enumerate(checked) if a.shape[1] != first)
            raise DataError(
                f"sequence {ids[i]!r} has {checked[i].shape[1]} features per step, sequence {ids[0]!r} {first}: "
                "every sample needs the same features (pad or drop the odd ones)"
            )
        parts = [torch.from_numpy(a.astype(np.float32)) for a in checked]
        return cls.from_parts(parts, torch.as_tensor(labels), ids, torch.zeros(0, 1))

    @classmethod
    def from_parts(cls, parts: list[Tensor], labels: Tensor, ids: Sequence[str], empty: Tensor) -> Sequences:
        """Samples given one tensor each, put end to end (`empty`: the steps when there are no samples)."""
        offsets = torch.tensor([0, *itertools.accumulate(len(p) for p in parts)], dtype=torch.long)
        return cls(torch.cat(parts) if parts else empty, offsets, labels, ids)

    @property
    def dtype(self) -> torch.dtype:
        return self.steps.dtype

    @property
    def lengths(self) -> Tensor:
        return self.offsets[1:] - self.offsets[:-1]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.steps[self.offsets[i] : self.offsets[i + 1]], self.labels[i]

    def subset(self, idx: Tensor, train: bool = False) -> Sequences:
        """The samples at idx, in that order (a copy in the same layout)."""
        parts = [self[int(i)][0] for i in idx]
        return Sequences.from_parts(parts, self.labels[idx], [self.ids[int(i)] for i in idx], self.steps[:0])

    def concat(self, other: Sequences) -> Sequences:
        """These samples, then `other`'s (a fixed test set): of the same number of features."""
        if other.steps.shape[1:] != self.steps.shape[1:]:
            raise DataError(
                f"the test sequences have {other.steps.shape[1]} features per step, the training ones "
                f"{self.steps.shape[1]}: give both the same features"
            )
        offsets = torch.cat([self.offsets, other.offsets[1:] + self.offsets[-1]])
        labels = torch.cat([self.labels, other.labels])
        return Sequences(torch.cat([self.steps, other.steps]), offsets, labels, self.ids + other.ids)

    def with_labels(self, labels: Tensor) -> Sequences:
        return Sequences(self.steps, self.offsets, labels, self.ids)

    def stack(self, limit: int | None = None) -> tuple[Padded, Tensor]:
        """The first `limit` samples (all by default) as one padded batch, and their labels."""
        n = len(self) if limit is None else min(limit, len(self))
        return pad_collate([self[i] for i in range(n)])["input"], self.labels[:n]


def checked_sample(a: np.ndarray, i: int, ids: Sequence[str]) -> np.ndarray:
    """One sample as (time, features): one line naming it if it is empty, of another rank, or holds a NaN / inf."""
    name = repr(ids[i])
    if a.ndim == 1:  # one feature per step
        a = a[:, None]
    if a.ndim != 2:
        raise DataError(f"sequence {name} has shape {list(a.shape)}: give each sample as (time, features)")
    if len(a) == 0:
        raise DataError(f"sequence {name} has no time steps (length 0): drop it, or give it at least one step")
    if not np.issubdtype(a.dtype, np.number):
        raise DataError(f"sequence {name} holds {a.dtype} values: give numbers")
    bad = ~np.isfinite(a).all(1)
    if bad.any():
        raise DataError(
            f"sequence {name} has NaN or infinite values at step {int(bad.argmax())}: fill them (e.g. with the "
            "previous step's values) or drop that sample"
        )
    return a


def pad_collate(samples: list[tuple[Tensor, Tensor]]) -> dict[str, Any]:
    """A batch of (sequence, label) samples padded with zeros to its longest: {"input": Padded, "target": y}."""
    parts = [s for s, _ in samples]
    lengths = torch.tensor([len(p) for p in parts], dtype=torch.long)
    values = torch.nn.utils.rnn.pad_sequence(parts, batch_first=True)
    return {
        "input": Padded(values, lengths, padding_mask(lengths, values.shape[1])),
        "target": torch.stack([y for _, y in samples]),
    }
