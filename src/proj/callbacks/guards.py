"""FiniteLossGuard: stop at the first non-finite training loss, naming the step, before a checkpoint of ruined
weights can replace the last good one."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import Callback


class NonFiniteLossError(FloatingPointError):
    pass


class FiniteLossGuard(Callback):
    """Raise at the first NaN / inf training loss, naming the step, before the next checkpoint is written.

    Checking a GPU tensor forces the host to wait for the device, so each step only records an `isfinite`
    flag on the device (one operation); the flags are read every `check_every_n_steps` steps and before
    validation / epoch end (when checkpoints are saved).
    """

    def __init__(self, check_every_n_steps: int = 50) -> None:
        self.check_every_n_steps = check_every_n_steps
        self.pending: list[tuple[int, torch.Tensor]] = []  # (optimizer step, loss is finite) not read yet

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, *args: Any) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        self.pending.append((trainer.global_step, torch.isfinite(loss.detach())))
        if trainer.global_step % self.check_every_n_steps == 0:
            self.check(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check(trainer)  # validation ends with a checkpoint: never save ruined weights

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check(trainer)

    def check(self, trainer: L.Trainer) -> None:
        if not self.pending:
            return
        steps, flags = zip(*self.pending, strict=True)
        self.pending = []
        finite = torch.stack(flags).cpu()  # the one wait for the device
        if finite.all():
            return
        step = steps[int((~finite).nonzero()[0])]
        ckpt = trainer.checkpoint_callback
        kept = getattr(ckpt, "last_model_path", "") or getattr(ckpt, "best_model_path", "") or "none yet"
        raise NonFiniteLossError(
            f"train/loss became non-finite (NaN or inf) at optimizer step {step} (epoch {trainer.current_epoch}); "
            f"training stopped. The last good checkpoint is kept: {kept}. Lower the learning rate, set "
            "trainer.gradient_clip_val, or check the data for NaN."
        )
