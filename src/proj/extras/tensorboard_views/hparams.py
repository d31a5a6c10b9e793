"""HParams: the run's hyper-parameters, as the keys people compare runs by, with its final metrics.

TensorBoard's HPARAMS tab, MLflow's parameters, W&B's config and the CSV logger's hparams.yaml all get the
same flat keys (optimizer=AdamW, lr=0.003, schedule=CosineAnnealingLR, batch_size=64, net=SmallCNN,
net.widths=[32, 64], ...), not the nested config with its _class_path / _instantiator plumbing; the whole
resolved config goes, as config.yaml, to the loggers that keep files (MLflow artifact, W&B file).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning.pytorch as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import TensorBoardLogger

from proj.extras.tensorboard_views.logger_output import log_artifact, log_hyperparams, rank_zero_loggers
from proj.run_settings import readable_hparams


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
        log_dir = trainer.log_dir  # on every rank: under DDP it is a broadcast, which rank 0 alone would hang in
        if not rank_zero_loggers(trainer):
            return
        params = readable_hparams(pl_module, trainer.datamodule, trainer)
        log_hyperparams(trainer, params, {self.tag(m): float("nan") for m in self.metrics})
        config = run_config(trainer, log_dir)
        if config is not None:
            log_artifact(trainer, config)

    def log_final(self, trainer: L.Trainer, prefix: str) -> None:
        values = {
            self.tag(m): float(trainer.callback_metrics[m])
            for m in self.metrics
            if m.startswith(prefix) and m in trainer.callback_metrics
        }
        for logger in rank_zero_loggers(trainer):  # the HPARAMS tab's metrics: TensorBoard's own view
            if isinstance(logger, TensorBoardLogger) and values:
                logger.log_metrics(values, step=trainer.global_step)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.log_final(trainer, "val/")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.log_final(trainer, "test/")


def run_config(trainer: L.Trainer, log_dir: str | None) -> Path | None:
    """The config.yaml the CLI wrote into the run directory at setup, if there is one."""
    for callback in trainer.callbacks:
        if isinstance(callback, SaveConfigCallback) and log_dir:
            path = Path(log_dir) / callback.config_filename
            return path if path.is_file() else None
    return None
