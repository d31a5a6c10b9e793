"""Per-channel standardisation: statistics of the training split, applied batched on the device."""

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor


class ChannelStats:
    """Running sums for the mean and std of each channel (dim 1) over samples and positions, in float64: fed
    chunk by chunk, so that neither a large split nor a stream of decoded images is ever held whole."""

    def __init__(self) -> None:
        self.total: Tensor | float = 0.0
        self.total_sq: Tensor | float = 0.0
        self.count = 0

    def add(self, x: Tensor, scale: float = 1.0) -> None:
        part = x.double() * scale
        dims = [d for d in range(x.ndim) if d != 1]
        self.total = self.total + part.sum(dim=dims)
        self.total_sq = self.total_sq + (part**2).sum(dim=dims)
        self.count += part.numel() // part.shape[1]

    def result(self) -> tuple[list[float], list[float]]:
        mean = self.total / self.count
        std = (self.total_sq / self.count - mean**2).clamp_min(0).sqrt().clamp_min(1e-6)  # a constant channel: finite
        return mean.tolist(), std.tolist()


def channel_stats(
    x: Tensor | Iterable[Tensor], scale: float = 1.0, chunk: int = 512
) -> tuple[list[float], list[float]]:
    """Mean and std of each channel of x (a tensor, taken `chunk` samples at a time; or an iterable of batches)."""
    stats = ChannelStats()
    chunks = (x[start : start + chunk] for start in range(0, len(x), chunk)) if isinstance(x, Tensor) else x
    for part in chunks:
        stats.add(part, scale)
    return stats.result()


def standardize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean_t = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(shape)
    std_t = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(shape)
    return (x - mean_t) / std_t
