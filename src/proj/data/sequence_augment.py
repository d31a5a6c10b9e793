"""Sequence augmentations, batched on the training device: jitter, scaling, time masking and window cropping.

Each acts on standardised values and on real steps only (the padding stays zero), draws its randomness per
sample from torch's global generator (seeded by the run, saved in checkpoints by the RngState callback, so a
resumed run draws what an uninterrupted one would), and is off at 0 (crop: at 1).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from proj.data.sequences import Padded
from proj.nets.sequence import padding_mask


class SequenceAugment(nn.Module):
    """jitter: the std of Gaussian noise added to every value (in standard deviations of the feature).
    scaling: the std of a factor ~ N(1, scaling) per sample and feature, multiplying its values.
    time_mask: the largest share of a sequence's steps set to 0 (the feature's mean) as one span at a random place.
    crop: the smallest share of a sequence kept as one window at a random place (its length shrinks to it)."""

    def __init__(self, jitter: float = 0.0, scaling: float = 0.0, time_mask: float = 0.0, crop: float = 1.0) -> None:
        super().__init__()
        self.jitter, self.scaling, self.time_mask, self.crop = jitter, scaling, time_mask, crop

    @property
    def active(self) -> bool:
        return bool(self.jitter or self.scaling or self.time_mask or self.crop < 1.0)

    def forward(self, x: Padded) -> Padded:
        values, lengths = x.values, x.lengths
        if self.crop < 1.0:
            values, lengths = crop_windows(values, lengths, self.crop)
        mask = padding_mask(lengths, values.shape[1])
        n, _, features = values.shape
        if self.scaling:
            values = values * (1 + self.scaling * torch.randn(n, 1, features, device=values.device))
        if self.jitter:
            values = values + self.jitter * torch.randn_like(values)
        if self.time_mask:
            mask = mask & ~random_spans(lengths, values.shape[1], self.time_mask)
        values = values * mask[..., None]  # the padding (and the masked span) at exactly zero
        return Padded(values, lengths, padding_mask(lengths, values.shape[1]))


def crop_windows(values: Tensor, lengths: Tensor, least: float) -> tuple[Tensor, Tensor]:
    """A window of each sequence, of a share ~ U(least, 1) of its length, at a random start, moved to step 0."""
    n, steps, features = values.shape
    share = least + (1 - least) * torch.rand(n, device=values.device)
    kept = (share * lengths).ceil().long().clamp(1)
    start = (torch.rand(n, device=values.device) * (lengths - kept + 1)).floor().long()
    index = (start[:, None] + torch.arange(steps, device=values.device)[None, :]).clamp(max=steps - 1)
    cropped = values.gather(1, index[..., None].expand(n, steps, features))
    return cropped * padding_mask(kept, steps)[..., None], kept


def random_spans(lengths: Tensor, steps: int, most: float) -> Tensor:
    """(batch, steps) bool: one span per sequence, of up to `most` of its length, within its real steps."""
    n, device = len(lengths), lengths.device
    width = (torch.rand(n, device=device) * most * lengths).floor().long()
    start = (torch.rand(n, device=device) * (lengths - width + 1)).floor().long()
    t = torch.arange(steps, device=device)[None, :]
    return (t >= start[:, None]) & (t < (start + width)[:, None])
