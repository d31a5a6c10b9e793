"""Adaptive gradient clipping (AGC; Brock et al. 2021, the NFNets paper; timm's `--clip-mode agc`).

Norm clipping (trainer.gradient_clip_val) rescales the whole gradient when its norm passes one fixed threshold,
which suits no layer in particular. AGC clips each unit (each output row of a weight) on its own, when its
gradient's norm exceeds `clip_factor` times that unit's weight norm: a step may change a unit by at most a
fixed fraction of its size, whatever the layer's scale. The rule is pytorch-optimizer's `agc`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import Callback
from pytorch_optimizer.optimizer.agc import agc


class AdaptiveGradientClipping(Callback):
    """Clip each parameter's gradient unit-wise before every optimizer step (after DDP's reduction and, under mixed
    precision, after unscaling: Lightning's on_before_optimizer_step).

    clip_factor: the largest gradient / weight norm ratio per unit (NFNets: 0.01 at batch 4096, larger for small
        batches; timm's default 0.01).
    eps: the smallest weight norm a unit is given, so that zero-initialised weights can still move.
    exclude: fnmatch patterns of parameters left unclipped: the final classifier layer (the paper's advice).
    """

    def __init__(self, clip_factor: float = 0.01, eps: float = 1e-3, exclude: Sequence[str] = ("net.head.*",)):
        if clip_factor <= 0 or eps <= 0:
            raise ValueError(f"AdaptiveGradientClipping: clip_factor={clip_factor} and eps={eps} must be positive")
        self.clip_factor, self.eps, self.exclude = clip_factor, eps, list(exclude)
        self.params: list[torch.nn.Parameter] = []

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if trainer.gradient_clip_val:  # two clippings, the later one deciding: say it rather than guess
            raise ValueError(
                f"AdaptiveGradientClipping and trainer.gradient_clip_val={trainer.gradient_clip_val} both clip the "
                "gradients: set trainer.gradient_clip_val: null (configs/callbacks/agc.yaml does)"
            )
        named = [(n, p) for n, p in pl_module.named_parameters() if p.requires_grad]
        for pattern in self.exclude:
            if not any(fnmatch.fnmatchcase(n, pattern) for n, _ in named):
                examples = ", ".join(n for n, _ in named[:4])
                raise ValueError(f"AdaptiveGradientClipping.exclude {pattern!r} matches no parameter ({examples}...)")
        self.params = [p for n, p in named if not any(fnmatch.fnmatchcase(n, e) for e in self.exclude)]

    @torch.no_grad()
    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        for p in self.params:
            if p.grad is not None:
                p.grad.copy_(agc(p, p.grad, agc_eps=self.eps, agc_clip_val=self.clip_factor))
