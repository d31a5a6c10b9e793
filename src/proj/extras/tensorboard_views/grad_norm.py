"""GradNorm: the global gradient norm before clipping (to choose gradient_clip_val, to spot explosions)."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import Callback

from proj.compat import logs_this_step


class GradNorm(Callback):
    """The L2 norm of all gradients together, before clipping, every `log_every_n_steps`."""

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        if not logs_this_step(trainer):
            return
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        if grads:
            pl_module.log("train/grad_norm", torch.nn.utils.get_total_norm(grads), on_step=True, on_epoch=False)
