"""Which of the run's loggers a view can draw into."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as L
from lightning.pytorch.loggers import TensorBoardLogger


def tensorboard(trainer: L.Trainer) -> Any:
    """The SummaryWriter of the run's TensorBoard logger, or None (other loggers, non-zero ranks)."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger) and trainer.is_global_zero:
            return logger.experiment
    return None


def tensorboard_logger(trainer: L.Trainer) -> TensorBoardLogger | None:
    return next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
