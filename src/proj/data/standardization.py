"""Per-channel standardisation: statistics of the training split, applied batched on the device."""

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor


def channel_stats(
    x: Tensor | Iterable[Tensor], scale: float = 1.0, chunk: int = 512
) -> tuple[list[float], list[float]]:
    """Mean and std of each channel (dim 1) over samples and positions, in float64, summed a chunk at a time so
    that neither a large split nor a stream of decoded images is held whole: x is a tensor (taken `chunk` samples
    at a time) or an iterable of batches."""
    total = total_sq = count = 0
    chunks = (x[start : start + chunk] for start in range(0, len(x), chunk)) if isinstance(x, Tensor) else x
    for part in chunks:
        part = part.double() * scale
        dims = [d for d in range(part.ndim) if d != 1]
        total = total + part.sum(dim=dims)
        total_sq = total_sq + (part**2).sum(dim=dims)
        count += part.numel() // part.shape[1]
    mean = total / count
    std = (total_sq / count - mean**2).clamp_min(0).sqrt().clamp_min(1e-6)  # a constant channel stays finite
    return mean.tolist(), std.tolist()


def standardize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean_t = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(shape)
    std_t = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(shape)
    return (x - mean_t) / std_t
