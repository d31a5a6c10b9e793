"""TensorBoard views: callbacks that draw what curves alone do not show. Switched on in configs/default.yaml.

- ConfusionMatrix: a figure of the validation confusion matrix every few epochs and at the end of fit.
- SampleGrid: one grid of training samples as the model sees them (augmented, mixed), once per run.
- HParams: the run's hyper-parameters with its final metrics, so the HPARAMS tab compares runs.
- GradNorm: the global gradient norm before clipping (to choose gradient_clip_val, to spot explosions).
- Throughput: training samples and batches per second, measured between logged steps.

Per-step work meant only for the logs runs on the steps whose values reach them (`logs_this_step`).
"""

from __future__ import annotations

import math
import time
from typing import Any

import lightning.pytorch as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from torchmetrics.classification import MulticlassConfusionMatrix


def logs_this_step(trainer: L.Trainer | None) -> bool:
    """Whether the values logged at this training step reach the loggers: every `trainer.log_every_n_steps`
    (every step under fast_dev_run), as Lightning decides; true without a trainer (a module called directly)."""
    if trainer is None:
        return True
    return trainer._logger_connector.should_update_logs or bool(trainer.fast_dev_run)


def tensorboard(trainer: L.Trainer) -> Any:
    """The SummaryWriter of the run's TensorBoard logger, or None (other loggers, non-zero ranks)."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger) and trainer.is_global_zero:
            return logger.experiment
    return None


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

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.matrix is None:  # no per-batch argument checks: on a GPU each would wait for the device
            num_classes = pl_module.hparams.get("num_classes") or trainer.datamodule.num_classes
            self.matrix = MulticlassConfusionMatrix(num_classes, normalize="true", validate_args=False)
        self.matrix = self.matrix.to(pl_module.device)
        self.matrix.reset()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if isinstance(outputs, dict) and "probs" in outputs:
            self.matrix.update(outputs["probs"], outputs["target"])

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
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


class SampleGrid(Callback):
    """The first training batch after augmentation, each image min-max scaled for display."""

    def __init__(self, max_images: int = 32) -> None:
        self.max_images = max_images
        self.done = False

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.done:
            return
        self.done = True
        writer = tensorboard(trainer)
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        if writer is None or x.ndim != 4:  # images only (N, C, H, W)
            return
        writer.add_image(
            "train/augmented_samples", image_grid(x[: self.max_images].detach().float().cpu()), trainer.global_step
        )


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


class HParams(Callback):
    """Writes the hyper-parameters with metrics declared (hp/...), then their values at the end of fit and test."""

    def __init__(self, metrics: tuple[str, ...] = ("val/acc", "val/loss", "test/acc", "test/loss")) -> None:
        self.metrics = metrics

    @staticmethod
    def tag(metric: str) -> str:
        return "hp/" + metric.replace("/", "_")

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
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
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger) and values:
                logger.log_metrics(values, step=trainer.global_step)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.log_final(trainer, "val/")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.log_final(trainer, "test/")


class GradNorm(Callback):
    """The L2 norm of all gradients together, before clipping, every `log_every_n_steps`."""

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        if not logs_this_step(trainer):
            return
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        if grads:
            pl_module.log("train/grad_norm", torch.nn.utils.get_total_norm(grads), on_step=True, on_epoch=False)


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
        self.samples += batch_size(batch)
        self.batches += 1
        # At the batch that closes a logged optimizer step (under gradient accumulation, the last of its batches).
        if trainer.fit_loop._should_accumulate() or not logs_this_step(trainer):
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


def batch_size(batch: Any) -> int:
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    return len(x)
