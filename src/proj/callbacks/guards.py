"""Stop a run that blew up before its ruined weights replace a good checkpoint, and say why a run stopped early.

- FiniteLossGuard: the first non-finite training loss, validation loss or weight stops the run, naming the
  epoch and step; no checkpoint of non-finite weights is ever written.
- EarlyStoppingWithReason: Lightning's EarlyStopping, which prints why it stopped the run.
"""

from __future__ import annotations

from itertools import chain
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason
from lightning.pytorch.utilities import rank_zero_info

FIX = "Lower the learning rate, set trainer.gradient_clip_val, or check the data for NaN."


class NonFiniteLossError(FloatingPointError):
    pass


class FiniteLossGuard(Callback):
    """Raise at the first NaN / inf training loss, validation loss or weight, naming the epoch and step.

    A training loss is computed before its own update, so the update of an epoch's last step escapes it: the
    weights themselves are checked at every validation end and training epoch end, which Lightning runs before
    any checkpoint callback's, and once more on any save (preemption, exceptions). Checking a GPU tensor makes
    the host wait for the device, so each step only records an `isfinite` flag on the device; the flags are read
    every `check_every_n_steps` steps, and the weights once per validation / epoch.
    """

    def __init__(self, check_every_n_steps: int = 50, val_loss: str = "val/loss") -> None:
        self.check_every_n_steps = check_every_n_steps
        self.val_loss = val_loss
        self.pending: list[tuple[int, torch.Tensor]] = []  # (optimizer step, loss is finite) not read yet
        self.weights_checked_at: int | None = None  # the global step whose weights were found finite

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, *args: Any) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        self.pending.append((trainer.global_step, torch.isfinite(loss.detach())))
        if trainer.global_step % self.check_every_n_steps == 0:
            self.check_losses(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check_losses(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self.check_weights(trainer, pl_module)
        value = trainer.callback_metrics.get(self.val_loss)
        bad = value is not None and not bool(torch.isfinite(value).all())
        if trainer.strategy.reduce_boolean_decision(bad, all=False):  # every rank stops, or none
            stop(trainer, f"{self.val_loss} is {float(value) if bad else 'non-finite on another process'}")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check_losses(trainer)
        self.check_weights(trainer, pl_module)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self.check_losses(trainer)  # raising here stops the write: nothing is saved
        self.check_weights(trainer, pl_module)

    def check_losses(self, trainer: L.Trainer) -> None:
        if not self.pending:
            return
        steps, flags = zip(*self.pending, strict=True)
        self.pending = []
        finite = torch.stack(flags).cpu()  # the one wait for the device
        if not finite.all():
            step = steps[int((~finite).nonzero()[0])]
            stop(trainer, "train/loss became non-finite (NaN or inf)", step)

    def check_weights(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.weights_checked_at == trainer.global_step:
            return  # already checked at this step: one device sync per validation / epoch
        bad = first_non_finite(pl_module)
        # Every rank decides together (a sharded model holds different pieces on each), so all of them stop.
        if trainer.strategy.reduce_boolean_decision(bad is not None, all=False):
            stop(trainer, f"the weights became non-finite (NaN or inf){f': {bad}' if bad else ''}")
        self.weights_checked_at = trainer.global_step


def first_non_finite(module: torch.nn.Module) -> str | None:
    """The name of the first parameter or buffer (of this process's shard) holding NaN / inf, else None."""
    named = [
        (name, t.to_local() if hasattr(t, "to_local") else t)
        for name, t in chain(module.named_parameters(), module.named_buffers())
        if t.is_floating_point() and t.device.type != "meta"
    ]
    if not named:
        return None
    device = named[0][1].device
    finite = torch.stack([torch.isfinite(t).all().to(device) for _, t in named]).cpu()  # the one wait
    return None if finite.all() else named[int((~finite).nonzero()[0])][0]


def stop(trainer: L.Trainer, what: str, step: int | None = None) -> None:
    ckpt = trainer.checkpoint_callback
    kept = getattr(ckpt, "last_model_path", "") or getattr(ckpt, "best_model_path", "") or "none yet"
    step = trainer.global_step if step is None else step
    raise NonFiniteLossError(
        f"{what} at optimizer step {step} (epoch {trainer.current_epoch}); training stopped and nothing of it was "
        f"saved. The last good checkpoint is kept: {kept}. {FIX}"
    )


class EarlyStoppingWithReason(EarlyStopping):
    """Lightning's EarlyStopping, which prints why it stopped the run (Lightning says so only with `verbose`,
    which also prints every improvement)."""

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.stopping_reason != EarlyStoppingReason.NOT_STOPPED and self.stopping_reason_message:
            rank_zero_info(f"Early stopping after epoch {self.stopped_epoch}: {self.stopping_reason_message}")
