"""The views of an image batch that test-time augmentation averages over, and how their outputs are averaged: pure
functions of tensors, no trainer.

A view is deterministic (the same view of the same batch on every run, rank and device), so a test score with TTA is
as reproducible as one without it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

# name: (rows down, columns right, flipped left-right), the shift in units of `pixels`
VIEWS = {
    "identity": (0, 0, False),
    "shift_up": (-1, 0, False),
    "shift_down": (1, 0, False),
    "shift_left": (0, -1, False),
    "shift_right": (0, 1, False),
    "hflip": (0, 0, True),
}


def shifted(x: Tensor, down: int, right: int) -> Tensor:
    """The images moved `down` rows and `right` columns (negative: up, left); the edge row or column repeats into the
    gap. Repeated, not zero: the batch is standardised, where 0 is the channel's mean, not the background."""
    if not down and not right:
        return x
    height, width = x.shape[-2:]
    pad = (max(right, 0), max(-right, 0), max(down, 0), max(-down, 0))  # left, right, top, bottom
    padded = F.pad(x, pad, mode="replicate")
    top, left = max(-down, 0), max(-right, 0)
    return padded[..., top : top + height, left : left + width]


def view_of(x: Tensor, name: str, pixels: int) -> Tensor:
    down, right, flip = VIEWS[name]
    x = shifted(x, down * pixels, right * pixels)
    return x.flip(-1) if flip else x


def stacked_views(x: Tensor, names: Sequence[str], pixels: int) -> Tensor:
    """The views of a batch (N, C, H, W), one after the other: (len(names) * N, C, H, W), one forward pass for all."""
    return torch.cat([view_of(x, name, pixels) for name in names])


def averaged_outputs(outputs: Tensor, views: int, average: str) -> Tensor:
    """The outputs of `views` stacked views, (views * N, k), averaged to (N, k), in float32.

    softmax: the mean of the class probabilities, returned as their logarithm: a logit vector whose softmax is that
        mean, so the loss, the metrics and predict read it as they read the model's logits.
    sigmoid: each label's mean probability, returned as its logit.
    outputs: the plain mean of the outputs (a regressor's values; timm's --tta averages a classifier's logits so).
    Computed in log space: a probability that rounds to 1 in float32 keeps a finite logit.
    """
    per_view = outputs.float().unflatten(0, (views, -1))
    if average == "outputs":
        return per_view.mean(0)
    log_views = math.log(views)
    if average == "softmax":
        return torch.logsumexp(per_view.log_softmax(-1), 0) - log_views
    positive = torch.logsumexp(F.logsigmoid(per_view), 0) - log_views
    negative = torch.logsumexp(F.logsigmoid(-per_view), 0) - log_views
    return positive - negative
