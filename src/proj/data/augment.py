"""Batched, on-device augmentation: kornia transforms from YAML, plus MixUp and CutMix with soft targets.

kornia applies each transform to a whole batch on the batch's device, with random parameters drawn per
sample (same_on_batch=False), so augmentation costs no DataLoader workers.

MixUp and CutMix are written here rather than taken from kornia's RandomMixUpV2 / RandomCutMixV2: kornia
returns (label_a, label_b, lambda) where lambda weighs label_b for MixUp but label_a for CutMix (with
use_correct_lambda, whose default is announced to change). Returning soft targets directly avoids that trap.
"""

import torch
from torch import Tensor, nn


def one_hot(y: Tensor, num_classes: int) -> Tensor:
    return y if y.is_floating_point() else nn.functional.one_hot(y, num_classes).float()


class BatchMix(nn.Module):
    """MixUp (Zhang et al. 2018) and CutMix (Yun et al. 2019) with a lambda ~ Beta(alpha, alpha) per sample.

    Each batch uses one of the enabled methods at random; each sample is mixed with probability `prob`,
    with another sample of the same batch. Targets become class probabilities that sum to 1.
    """

    def __init__(self, num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0, prob: float = 1.0):
        super().__init__()
        self.num_classes = num_classes
        self.alphas = {"mixup": mixup_alpha, "cutmix": cutmix_alpha}
        self.methods = [name for name, alpha in self.alphas.items() if alpha > 0]
        self.prob = prob

    def forward(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        target = one_hot(y, self.num_classes)
        if not self.methods:
            return x, target
        method = self.methods[int(torch.randint(len(self.methods), ()))]
        n = x.shape[0]
        alpha = torch.tensor(self.alphas[method], device=x.device)
        lam = torch.distributions.Beta(alpha, alpha).sample((n,))
        lam = torch.where(torch.rand(n, device=x.device) < self.prob, lam, torch.ones_like(lam))
        partner = torch.randperm(n, device=x.device)
        if method == "mixup":
            shape = (n,) + (1,) * (x.ndim - 1)
            x = lam.view(shape) * x + (1 - lam.view(shape)) * x[partner]
        else:
            x, lam = cutmix(x, x[partner], lam)
        return x, lam[:, None] * target + (1 - lam[:, None]) * target[partner]


def cutmix(x: Tensor, other: Tensor, lam: Tensor) -> tuple[Tensor, Tensor]:
    """Paste a box of `other` covering about 1 - lam of each image; return the exact share of `x` kept."""
    n, _, h, w = x.shape
    ratio = (1 - lam).sqrt()
    cy, cx = (torch.rand(n, device=x.device) * h), (torch.rand(n, device=x.device) * w)
    y0, y1 = (cy - ratio * h / 2).clamp(0, h).round(), (cy + ratio * h / 2).clamp(0, h).round()
    x0, x1 = (cx - ratio * w / 2).clamp(0, w).round(), (cx + ratio * w / 2).clamp(0, w).round()
    rows = torch.arange(h, device=x.device)[None, :, None]
    cols = torch.arange(w, device=x.device)[None, None, :]
    box = (
        (rows >= y0[:, None, None])
        & (rows < y1[:, None, None])
        & (cols >= x0[:, None, None])
        & (cols < x1[:, None, None])
    )
    mixed = torch.where(box[:, None], other, x)
    kept = 1 - box.flatten(1).float().mean(1)  # the clipped box is smaller: weigh the targets by what was pasted
    return mixed, kept
