"""Checkpoint averaging (timm's avg_checkpoints.py, done during the run): the equal average of the weights and buffers
at the end of the last `last_k` training epochs.

It fits the run the way EMA and SWA do (weight_averaging.py): from the first epoch end on, validation (so early
stopping and the best checkpoint), every checkpoint's state_dict (so test after fit, predict and export) and the model
left after fit are the average of the epoch ends so far, up to `last_k` of them; the raw weights travel beside it as
`current_model_state`. An epoch's end state is taken after its last optimizer step and before its validation, so the
validation of epoch e judges the average of epochs e-k+1 .. e.

The kept states are copies on the CPU, and they travel in the checkpoint (this callback's state), so a resumed run
averages the same states, bit for bit. Their cost: k copies of the model's state in host memory (on every rank under
DDP), one more copy (the average) on the training device, and k + 2 copies of the weights in every checkpoint.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as L
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

from proj.extras.averaging.checks import check_same_layers, refuse_alongside, refuse_schedule_free
from proj.extras.averaging.weight_averaging import copy_weights, swap

NAME = "AverageCheckpoints"


class AverageCheckpoints(WeightAveraging):
    """The equal average of the model's state at the end of the last `last_k` training epochs
    (configs/callbacks/avg_checkpoints.yaml). last_k=1 is the plain run.

    A WeightAveraging of Lightning's in name (so that EMA and SWA refuse to run beside it) whose every hook is its
    own: Lightning's keeps a running average (AveragedModel), which cannot drop the oldest epoch.
    """

    def __init__(self, last_k: int = 5) -> None:
        if isinstance(last_k, bool) or not isinstance(last_k, int) or last_k < 1:
            raise ValueError(f"{NAME}: last_k={last_k!r} must be a whole number of epochs, at least 1")
        super().__init__(use_buffers=True)
        self.last_k = last_k
        self.kept: list[dict[str, Tensor]] = []  # the last epoch ends' state_dicts, on the CPU, oldest first
        self.kept_epochs: list[int] = []
        self.swapped = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return  # test / predict / validate read the averaged state_dict of their checkpoint
        refuse_alongside(trainer, self, NAME)
        refuse_schedule_free(pl_module, NAME)
        # The average's home on the training device, where validation swaps it in (EMA's reason not to call
        # configure_model first: it would compile and shard too soon).
        self._average_model = AveragedModel(pl_module, device=pl_module.device, use_buffers=True)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        check_same_layers(self._average_model.module, pl_module, NAME)

    def active(self, trainer: L.Trainer) -> bool:
        """Whether there is an average to use: an epoch has ended, in this fit or in the run it resumes."""
        return trainer.state.fn == TrainerFn.FITTING and self._average_model is not None and bool(self.kept)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # The epoch's last batch (its optimizer step is done): kept before the validation that follows it.
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            self.keep(trainer.current_epoch, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # An epoch whose last batch was not known as such (max_steps reached inside it) ends here; else a no-op.
        self.keep(trainer.current_epoch, pl_module)

    def keep(self, epoch: int, pl_module: nn.Module) -> None:
        if self.kept_epochs and self.kept_epochs[-1] == epoch:
            return
        self.kept.append({name: t.detach().to("cpu", copy=True) for name, t in pl_module.state_dict().items()})
        self.kept_epochs.append(epoch)
        del self.kept[: -self.last_k], self.kept_epochs[: -self.last_k]
        self.load_average()

    def load_average(self) -> None:
        average = equal_average(self.kept)
        for name, tensor in self._average_model.module.state_dict().items():  # the module's own storage
            tensor.copy_(average[name])
        self._average_model.n_averaged.fill_(len(self.kept))

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.active(trainer):
            swap(pl_module, self._average_model.module)
            self.swapped = True

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.swapped:
            swap(pl_module, self._average_model.module)
            self.swapped = False

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.active(trainer):  # the model left after fit is the last average, as its last checkpoint
            copy_weights(self._average_model.module, pl_module)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if self.active(trainer):
            checkpoint["current_model_state"] = checkpoint["state_dict"]
            checkpoint["state_dict"] = self._average_model.module.state_dict()

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        # Resuming a fit: train on from the raw weights (load_state_dict brings the kept states back). Testing or
        # predicting: the checkpoint's state_dict is the average that was validated; keep it.
        if trainer.state.fn == TrainerFn.FITTING and "current_model_state" in checkpoint:
            pl_module.load_state_dict(checkpoint["current_model_state"])

    def state_dict(self) -> dict[str, Any]:
        return {"kept": self.kept, "kept_epochs": self.kept_epochs}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.kept = list(state_dict["kept"])[-self.last_k :]
        self.kept_epochs = list(state_dict["kept_epochs"])[-self.last_k :]
        if self._average_model is not None and self.kept:
            self.load_average()


def equal_average(states: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """As timm's avg_checkpoints.py: each floating tensor summed in float64, divided by their number, and cast back to
    its dtype. An integer buffer (BatchNorm's num_batches_tracked) is a count, not a weight: the latest value."""
    latest = states[-1]
    return {
        name: (sum(s[name].double() for s in states) / len(states)).to(t.dtype) if t.is_floating_point() else t
        for name, t in latest.items()
    }
