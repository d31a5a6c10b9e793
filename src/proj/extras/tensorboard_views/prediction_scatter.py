"""PredictionScatter: predicted against true values on the validation split, for regression.

The regression counterpart of the confusion matrix: points on the diagonal are exact, a slope below it
means predictions shrunk towards the mean, a fan means errors that grow with the value. Drawn every
`every_n_epochs` epochs and once more, for the last epoch, at the end of fit. It does nothing, silently,
when the model is not a regressor, so the default config lists it for every task.
"""

from __future__ import annotations

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import Callback
from torchmetrics import CatMetric

from proj.extras.tensorboard_views.logger_output import log_figure


class PredictionScatter(Callback):
    def __init__(self, every_n_epochs: int = 10, max_points: int = 2000) -> None:
        self.every_n_epochs, self.max_points = every_n_epochs, max_points
        self.active = True
        # CatMetric: the epoch's points gathered from every rank under DDP, as the metrics are
        self.preds, self.targets = CatMetric(), CatMetric()
        self.undrawn: tuple[torch.Tensor, torch.Tensor, int, int] | None = None  # (pred, true, epoch, step)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.active = getattr(pl_module, "task", None) == "regression"  # else silent: the view does not apply

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.preds, self.targets = self.preds.to(pl_module.device), self.targets.to(pl_module.device)
        self.preds.reset()
        self.targets.reset()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self.active and isinstance(outputs, dict) and "preds" in outputs:
            self.preds.update(outputs["preds"][:, 0].float())  # the first target
            self.targets.update(outputs["target"].reshape(len(outputs["target"]), -1)[:, 0].float())

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self.active or not self.preds.update_called:
            return
        pred, true = self.preds.compute().cpu(), self.targets.compute().cpu()  # on every rank: a collective
        self.undrawn = (pred[: self.max_points], true[: self.max_points], trainer.current_epoch, trainer.global_step)
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.draw(trainer)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.draw(trainer)

    def draw(self, trainer: L.Trainer) -> None:
        if self.undrawn is None or not trainer.is_global_zero:
            return
        (pred, true, epoch, step), self.undrawn = self.undrawn, None
        from matplotlib.figure import Figure  # no pyplot: no global backend, safe in notebooks and threads

        figure = Figure(figsize=(4.5, 4.5))
        ax = figure.subplots()
        ax.scatter(true.numpy(), pred.numpy(), s=8, alpha=0.6)
        low, high = float(min(true.min(), pred.min())), float(max(true.max(), pred.max()))
        ax.plot([low, high], [low, high], color="grey", linewidth=0.8)
        ax.set(xlabel="true", ylabel="predicted", title=f"validation, epoch {epoch}")
        log_figure(trainer, "val/predicted_vs_true", figure, step)
