"""ConfusionMatrix: a figure of the validation confusion matrix every few epochs and at the end of fit.

Classification only: in the default config for every task, it does nothing (one info line) when the model
is not a classifier, so a regression experiment does not have to rewrite the callback list.
"""

from __future__ import annotations

import lightning.pytorch as L
import numpy as np
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from torchmetrics.classification import MulticlassConfusionMatrix

from proj.callbacks.loggers import tensorboard


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
        writer = tensorboard(trainer)
        if writer is None or self.undrawn is None:  # other ranks, other loggers, already drawn
            return
        (matrix, epoch, step), self.undrawn = self.undrawn, None
        from matplotlib.figure import Figure  # no pyplot: no global backend, safe in notebooks and threads

        size = max(4, 0.4 * len(matrix))
        figure = Figure(figsize=(size, size))
        ax = figure.subplots()
        ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
        ax.set(xlabel="predicted", ylabel="true", title=f"validation, epoch {epoch}")
        if len(matrix) <= 20:  # numbers in the cells while they stay readable
            for (i, j), v in np.ndenumerate(matrix):
                if v >= 0.01:
                    ax.text(
                        j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if v > 0.5 else "black"
                    )
        writer.add_figure("val/confusion_matrix", figure, global_step=step)
