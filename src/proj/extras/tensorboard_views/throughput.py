"""Throughput: training samples and batches per second, measured between logged steps."""

from __future__ import annotations

import time
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import Callback

from proj.compat import accumulating, logs_this_step
from proj.models.batches import batch_size, read_batch


class Throughput(Callback):
    """Training samples and batches per second (`train/device/...` on each device, `train/...` for all).

    Measured from one logged step to the next, so the steps in between cost nothing: Lightning's
    ThroughputMonitor updates on every step and, on a GPU, waits for the device at each of them, which
    stalls the host's queue of work. The clock restarts after validation, which is not counted.
    """

    def __init__(self) -> None:
        self.start: float | None = None
        self.samples = self.batches = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = None

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, *args: Any
    ) -> None:
        self.samples += batch_size(read_batch(pl_module, batch))
        self.batches += 1
        # At the batch that closes a logged optimizer step (under gradient accumulation, the last of its batches).
        if accumulating(trainer) or not logs_this_step(trainer):
            return
        if pl_module.device.type != "cpu":
            torch.accelerator.synchronize(pl_module.device)  # the work queued so far is done: the clock is true
        now = time.perf_counter()
        if self.start is not None and now > self.start:
            seconds, world = now - self.start, trainer.world_size
            rates = {"samples_per_sec": self.samples / seconds, "batches_per_sec": self.batches / seconds}
            metrics = {f"train/device/{k}": v for k, v in rates.items()}
            metrics.update({f"train/{k}": v * world for k, v in rates.items()})  # every rank takes equal batches
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)
        self.start, self.samples, self.batches = now, 0, 0
