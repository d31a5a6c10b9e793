"""HParams: the run's hyper-parameters with its final metrics, so TensorBoard's HPARAMS tab compares runs."""

from __future__ import annotations

from collections.abc import Sequence

import lightning.pytorch as L
from lightning.pytorch.callbacks import Callback

from proj.callbacks.loggers import tensorboard_logger


class HParams(Callback):
    """Writes the hyper-parameters with metrics declared (hp/...), then their values at the end of fit and test.

    metrics: the metrics to compare runs by; by default the task's own (`headline_metrics` of the model:
    accuracy for a classifier, RMSE and R^2 for a regressor) and the loss, on validation and test.
    """

    def __init__(self, metrics: Sequence[str] | None = None) -> None:
        self.metrics = tuple(metrics) if metrics else ()

    @staticmethod
    def tag(metric: str) -> str:
        return "hp/" + metric.replace("/", "_")

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not self.metrics:
            names = [*getattr(pl_module, "headline_metrics", ()), "loss"]
            self.metrics = tuple(f"{split}/{name}" for split in ("val", "test") for name in names)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = tensorboard_logger(trainer)
        if logger is None:
            return
        params = dict(pl_module.hparams)
        if trainer.datamodule is not None:
            params.update({f"data/{k}": v for k, v in trainer.datamodule.hparams.items()})
        logger.log_hyperparams(params, metrics={self.tag(m): float("nan") for m in self.metrics})

    def log_final(self, trainer: L.Trainer, prefix: str) -> None:
        values = {
            self.tag(m): float(trainer.callback_metrics[m])
            for m in self.metrics
            if m.startswith(prefix) and m in trainer.callback_metrics
        }
        logger = tensorboard_logger(trainer)
        if logger is not None and values:
            logger.log_metrics(values, step=trainer.global_step)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.log_final(trainer, "val/")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.log_final(trainer, "test/")
