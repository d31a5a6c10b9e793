"""SampleGrid: one grid of training samples as the model sees them (augmented, mixed), once per run."""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from proj.extras.tensorboard_views.logger_output import log_image
from proj.models.batches import BatchError, read_batch


class SampleGrid(Callback):
    """The first training batch after augmentation, each image min-max scaled for display. Inputs that are not
    images (N, C, H, W) are not drawn, without a word: the view does not apply to them."""

    def __init__(self, max_images: int = 32) -> None:
        self.max_images = max_images
        self.done = False

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.done:
            return
        self.done = True
        try:
            x = read_batch(pl_module, batch).inputs
        except BatchError as err:  # the model's steps will say it too; this view says it once, here
            rank_zero_info(f"SampleGrid: no grid drawn, the batch cannot be read ({err})")
            return
        if not trainer.is_global_zero or not isinstance(x, torch.Tensor) or x.ndim != 4:  # images only (N, C, H, W)
            return
        grid = image_grid(x[: self.max_images].detach().float().cpu())
        log_image(trainer, "train/augmented_samples", displayable(grid), trainer.global_step)


def displayable(grid: torch.Tensor, least: int = 320) -> np.ndarray:
    """(C, H, W) in [0, 1] -> (H, W, 3) uint8, enlarged by whole pixels (nearest) to at least `least` pixels
    across: an 8 x 8 digit grid is 60 pixels wide, a dot in TensorBoard's image card."""
    scale = max(1, least // max(grid.shape[1:]))
    grid = grid.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    grid = grid.expand(3, -1, -1) if grid.shape[0] == 1 else grid[:3]
    return (grid.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def image_grid(x: torch.Tensor, pad: int = 1) -> torch.Tensor:
    """(N, C, H, W) -> one (C, rows * H, cols * W) image, every sample scaled to [0, 1]."""
    n, c, h, w = x.shape
    low = x.flatten(1).min(1).values.view(n, 1, 1, 1)
    high = x.flatten(1).max(1).values.view(n, 1, 1, 1)
    x = (x - low) / (high - low).clamp_min(1e-8)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = torch.ones(c, rows * (h + pad) + pad, cols * (w + pad) + pad)
    for i in range(n):
        r, col = divmod(i, cols)
        grid[:, pad + r * (h + pad) : pad + r * (h + pad) + h, pad + col * (w + pad) : pad + col * (w + pad) + w] = x[i]
    return grid
