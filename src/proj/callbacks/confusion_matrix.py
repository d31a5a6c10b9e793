"""ConfusionMatrix: a figure of the validation confusion matrix every few epochs and at the end of fit.

Classification only: in the default config for every task, it does nothing (one info line) when the model
is not a classifier, so a regression experiment does not have to rewrite the callback list.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning.pytorch as L
import numpy as np
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from torchmetrics.classification import MulticlassConfusionMatrix

from proj.callbacks.loggers import log_figure


class ConfusionMatrix(Callback):
    """Rows: true class; columns: predicted class; each row normalised to sum to 1.

    The matrix is computed after every validation epoch (cheap) but drawn every `every_n_epochs` epochs and
    once more, for the last epoch, at the end of fit: one figure costs matplotlib about 0.1 s (mostly the
    numbers in the cells), a third of an epoch of the default digits run.
    """

    def __init__(self, every_n_epochs: int = 10) -> None:
        self.every_n_epochs = every_n_epochs
        self.matrix: MulticlassConfusionMatrix | None = None
        self.undrawn: tuple[np.ndarray, int, int] | None = None  # (matrix, epoch, step) not drawn yet
        self.active = True

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.active = getattr(pl_module, "task", None) == "classification"
        if not self.active:
            rank_zero_info(f"ConfusionMatrix: skipped, the model's task is {getattr(pl_module, 'task', None)!r}")

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.active:
            return
        if self.matrix is None:  # no per-batch argument checks: on a GPU each would wait for the device
            self.matrix = MulticlassConfusionMatrix(pl_module.num_outputs, normalize="true", validate_args=False)
        self.matrix = self.matrix.to(pl_module.device)
        self.matrix.reset()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self.active and isinstance(outputs, dict) and "probs" in outputs:
            self.matrix.update(outputs["probs"], outputs["target"])

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self.active:
            return
        matrix = self.matrix.compute().cpu().numpy()  # on every rank: under DDP this gathers from all of them
        self.undrawn = (matrix, trainer.current_epoch, trainer.global_step)
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0:  # epochs 9, 19, ... counted from 0
            self.draw(trainer)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.draw(trainer)

    def draw(self, trainer: L.Trainer) -> None:
        if self.undrawn is None or not trainer.is_global_zero:  # already drawn, other ranks
            return
        (matrix, epoch, step), self.undrawn = self.undrawn, None
        names = getattr(trainer.lightning_module, "class_names", None) or range(len(matrix))
        log_figure(trainer, "val/confusion_matrix", confusion_figure(matrix, names, f"validation, epoch {epoch}"), step)


def confusion_figure(matrix: np.ndarray, class_names: Sequence[Any], title: str) -> Any:
    """Every class name on both axes, readable to 100 classes (CIFAR-100): the figure grows with the classes
    (0.16 inch a class, about 16 pixels), the names shrink to fit a cell, numbers in the cells up to 20 classes."""
    from matplotlib.figure import Figure  # no pyplot: no global backend, safe in notebooks and threads

    n = len(matrix)
    names = [str(c) for c in class_names]
    longest = max((len(c) for c in names), default=1)
    fontsize = float(np.clip(0.16 * 72 * 0.75, 5, 9)) if n > 20 else 9.0  # points: 3/4 of a cell's height
    margin = 0.8 + longest * fontsize * 0.6 / 72  # inches for the names, whatever their length
    side = max(4.0, 0.16 * n)
    width, height = side + margin + 1.6, side + margin + 0.6
    figure = Figure(figsize=(width, height), dpi=100)
    # Margins set from the names' length rather than by a layout engine: "constrained" cost 30 ms a figure.
    ax = figure.add_axes((margin / width, margin / height, side / width, side / height))
    image = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
    colorbar = figure.add_axes(
        ((margin + side + 0.25) / width, (margin + 0.2 * side) / height, 0.15 / width, 0.6 * side / height)
    )
    figure.colorbar(image, cax=colorbar, label="fraction of the true class")
    ax.set_xticks(range(n), names, rotation=90, fontsize=fontsize)
    ax.set_yticks(range(n), names, fontsize=fontsize)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    if n <= 20:  # numbers in the cells while they stay readable
        for (i, j), v in np.ndenumerate(matrix):
            if v >= 0.01:
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if v > 0.5 else "black")
    return figure
