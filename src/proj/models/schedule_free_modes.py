"""Optimizers with a train and an eval mode (Schedule-Free: schedulefree's AdamWScheduleFree, SGDScheduleFree, ...),
switched by the model, so that naming the class_path is all a config does.

Such an optimizer keeps two points: while training the parameters hold y, where the gradients are taken; after
eval() they hold x, the average of the iterates, which is what the method promises to be good. Its state holds
the third point (z), so each mode converts into the other. Here x is what validation, test, predict, export and
every checkpoint see, and y is what the training steps see:

- eval() before validation, test and predict (as the net is put into eval mode), and when fit ends;
- train() at the first training batch after that, not at the end of validation: the epoch's checkpoints, saved
  in between, then hold the validated weights bit for bit;
- a checkpoint saved while training (mid-epoch: a preemption, val_check_interval < 1; or after an epoch without
  validation) is given x and the optimizer state as of eval mode, like one saved after validation, and y as well:
  y -> x -> y is exact only up to rounding (1e-7 after two epochs), so training goes on from the y it had, and a
  run resumed from that checkpoint starts from the saved y. Both continue bit for bit as if nothing was saved.

BatchNorm running statistics are not recomputed at x: they are the ones gathered while training, at y (schedulefree
suggests recomputing them over some training batches before evaluating; the digits recipe trains well without:
tests/test_third_party_optim.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import lightning.pytorch as L
import torch
from torch import Tensor

from proj.optim.config import switches_modes

TRAINING_WEIGHTS = "schedule_free_training_weights"  # the checkpoint's key for y


class ScheduleFreeModes(L.LightningModule):
    """The hooks that keep an optimizer's mode with the loop's. A no-op for optimizers without train() / eval()."""

    optimizer_mode = "eval"  # the mode the module last put its optimizers in (a new one starts in eval mode)
    saved_training_weights: dict[str, Tensor] | None = None  # y, from a checkpoint saved while training

    def set_optimizer_mode(self, mode: str, optimizers: Iterable[Any] | None = None) -> None:
        if optimizers is None:
            optimizers = self._trainer.optimizers if self._trainer is not None else []
        for optimizer in optimizers:
            if switches_modes(optimizer):
                getattr(optimizer, mode)()
        self.optimizer_mode = mode

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Every batch, cheaply: an optimizer made in between (a stage switch, the lr finder) starts in eval mode.
        self.set_optimizer_mode("train")
        if self.saved_training_weights is not None:  # the first batch of a run resumed from a mid-training save
            self.load_state_dict(self.saved_training_weights)
            self.saved_training_weights = None

    def on_validation_model_eval(self) -> None:
        super().on_validation_model_eval()
        self.set_optimizer_mode("eval")

    def on_test_model_eval(self) -> None:
        super().on_test_model_eval()
        self.set_optimizer_mode("eval")

    def on_predict_model_eval(self) -> None:
        super().on_predict_model_eval()
        self.set_optimizer_mode("eval")

    def on_train_end(self) -> None:
        self.set_optimizer_mode("eval")  # the model a finished fit leaves: tested, exported, saved as x

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.optimizer_mode == "train" and any(switches_modes(o) for o in self.trainer.optimizers):
            self.save_averaged_weights(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Loaded only by a resumed fit's first training batch (validate, test, predict and export use x).
        self.saved_training_weights = checkpoint.get(TRAINING_WEIGHTS)

    def save_averaged_weights(self, checkpoint: dict[str, Any]) -> None:
        """Lightning has already put the training weights (y) into `checkpoint`: keep them under their own key,
        put x in their place, and the optimizer state as of eval mode (the mode flag in its param groups); then
        train() and y exactly as it was. The state_dict shares storage with the parameters, hence the copies."""
        strategy, y = self.trainer.strategy, [p.detach().clone() for p in self.parameters()]
        checkpoint[TRAINING_WEIGHTS] = detached(checkpoint["state_dict"])
        self.set_optimizer_mode("eval")
        checkpoint["state_dict"] = detached(strategy.lightning_module_state_dict())
        if "optimizer_states" in checkpoint:  # not in a weights-only checkpoint
            checkpoint["optimizer_states"] = [strategy.optimizer_state(o) for o in self.trainer.optimizers]
        self.set_optimizer_mode("train")
        with torch.no_grad():
            for param, saved in zip(self.parameters(), y, strict=True):
                param.copy_(saved)


def detached(state: dict[str, Any]) -> dict[str, Any]:
    return {k: v.detach().clone() if isinstance(v, Tensor) else v for k, v in state.items()}
