"""Weight averaging that every use of the model sees: Lightning's EMA and SWA callbacks, with their gaps closed.

With either one on, validation, the checkpoints (so test after fit, predict and export), and the model left in
memory after fit are all the same averaged weights; the raw weights travel in the checkpoint as
`current_model_state`, so a resumed run continues both the training and the average.

- `EMA` is Lightning's EMAWeightAveraging (a moving average of the weights and buffers after every optimizer
  step). Lightning validated and saved the average but, in trainer.test(ckpt_path=...) after fit, reloaded the
  raw weights from the checkpoint's current_model_state: outside fit the checkpoint's state_dict is kept here.
- `SWA` is Lightning's StochasticWeightAveraging (an equal average of the weights at each epoch start from
  swa_epoch_start on, trained under its SWALR schedule). Lightning validated and saved the raw weights and
  recomputed the average's BatchNorm statistics only in an extra epoch at the very end, so early stopping, the
  best checkpoint and an export never saw the average. Here the average's statistics are recomputed during each
  SWA epoch, on that epoch's training batches (one forward pass of the average, no backward), and validation,
  checkpoints and the end of fit use the average with them.

Both refuse before training what they cannot average: a sharded model, a schedule-free optimizer, pruning, both at once;
SWA also several optimizer stages and a stage with two schedulers (see proj.optim.schedulers.build_schedulers).
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import lightning.pytorch as L
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch.callbacks import EMAWeightAveraging, StochasticWeightAveraging
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from torch.optim.swa_utils import AveragedModel

from proj.extras.averaging.checks import (
    check_same_layers,
    refuse_alongside,
    refuse_schedule_free,
    refuse_stages,
    refuse_two_schedulers,
    tensors,
    warn_if_too_slow,
)
from proj.models.batches import read_batch


class EMA(EMAWeightAveraging):
    """Lightning's EMAWeightAveraging, whose average is also what test after fit tests (configs/callbacks/ema.yaml).

    decay: the weight of the old average at each update; the average spans about 1 / (1 - decay) optimizer steps.
    """

    def __init__(
        self,
        device: torch.device | str | int | None = None,
        use_buffers: bool = True,
        decay: float = 0.999,
        update_every_n_steps: int = 1,
        update_starting_at_step: int | None = None,
        update_starting_at_epoch: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            device,
            use_buffers,
            decay,
            update_every_n_steps,
            update_starting_at_step,
            update_starting_at_epoch,
            **kwargs,
        )
        self.decay = decay  # Lightning keeps it only inside its averaging function

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        warn_if_too_slow(self.decay, trainer.estimated_stepping_batches / self.update_every_n_steps)
        refuse_alongside(trainer, self, "EMA")
        refuse_schedule_free(pl_module, "EMA")
        # Lightning calls configure_model first, to build layers made there; the template's configure_model builds
        # none (memory layout, compile, FSDP2 sharding), and run this early it would compile and shard too soon.
        device = self._device or pl_module.device
        self._average_model = AveragedModel(pl_module, device=device, use_buffers=self._use_buffers, **self._kwargs)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        check_same_layers(self._average_model.module, pl_module, "EMA")

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        # Resuming a fit: the average from the state_dict, the raw weights from current_model_state (Lightning's).
        # Testing or predicting: the checkpoint's state_dict is the average that was validated; keep it.
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "latest_update_epoch": self._latest_update_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._latest_update_epoch = state_dict.get("latest_update_epoch", -1)


class SWA(StochasticWeightAveraging):
    """Lightning's StochasticWeightAveraging, whose average (BatchNorm statistics recomputed) is what is validated,
    checkpointed, tested, predicted and exported (configs/callbacks/swa.yaml).

    swa_lrs: the lr SWALR anneals to and holds from swa_epoch_start on (times each parameter group's lr_scale).
    swa_epoch_start: the first averaged epoch (counted from 1), or a fraction of trainer.max_epochs.
    annealing_epochs / annealing_strategy: how SWALR moves from the current lr to swa_lrs.
    device: where the average lives; None (default) is the training device, where its BatchNorm pass runs.
    """

    def __init__(
        self,
        swa_lrs: float | list[float],
        swa_epoch_start: int | float = 0.8,
        annealing_epochs: int = 10,
        annealing_strategy: Literal["cos", "linear"] = "cos",
        device: str | None = None,
    ) -> None:
        super().__init__(swa_lrs, swa_epoch_start, annealing_epochs, annealing_strategy, device=device)
        self.batch_norms: list[nn.Module] = []
        self.loaded_average: dict[str, Any] | None = None
        self.swapped = False
        self.schedule_name: str | None = None

    @staticmethod
    def pl_module_contains_batch_norm(pl_module: L.LightningModule) -> bool:
        return False  # no extra epoch at the end for BatchNorm: the statistics are recomputed in every SWA epoch

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return  # test / predict / validate read the averaged state_dict of their checkpoint
        refuse_alongside(trainer, self, "SWA")
        refuse_schedule_free(pl_module, "SWA")
        refuse_stages(pl_module)
        super().setup(trainer, pl_module, stage)
        self._average_model.eval()  # it only stores weights, and runs its BatchNorm layers for their statistics
        self.batch_norms = [m for m in self._average_model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        for module in self.batch_norms:
            module.train()
            module.momentum = None  # a plain mean over the epoch's batches, as torch.optim.swa_utils.update_bn

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        check_same_layers(self._average_model, pl_module, "SWA")
        refuse_two_schedulers(trainer, pl_module)
        # The stage's schedule name (its lr tag), before Lightning drops the schedule of a run resumed in SWA.
        self.schedule_name = next((c.name for c in trainer.lr_scheduler_configs), None)
        super().on_fit_start(trainer, pl_module)
        if trainer.max_epochs is not None and self._swa_epoch_start > trainer.max_epochs > 0:
            raise ValueError(
                f"SWA: swa_epoch_start={self._swa_epoch_start} lies beyond trainer.max_epochs={trainer.max_epochs}: "
                "no epoch would be averaged. Lower swa_epoch_start or raise max_epochs"
            )

    def active(self, trainer: L.Trainer) -> bool:
        """Whether there is an average to use: an SWA epoch has started, in this fit or in the run it resumes."""
        fitting = trainer.state.fn == TrainerFn.FITTING
        return fitting and self._average_model is not None and self._latest_update_epoch >= 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        optimizer = trainer.optimizers[0]
        if not self._initialized and isinstance(self._swa_lrs, float):  # parameter groups keep their lr_scale
            self._swa_lrs = [self._swa_lrs * group.get("lr_scale", 1.0) for group in optimizer.param_groups]
        before = self._latest_update_epoch
        with warnings.catch_warnings():  # a per-step schedule is replaced by SWALR all the same: nothing to fix
            warnings.filterwarnings("ignore", message="SWA is currently only supported every epoch")
            super().on_train_epoch_start(trainer, pl_module)
        if trainer.lr_scheduler_configs and trainer.lr_scheduler_configs[0].scheduler is self._swa_scheduler:
            trainer.lr_scheduler_configs[0].name = self.schedule_name  # the lr curve goes on under its tag
        if self._latest_update_epoch != before:  # the average moved: its statistics start again at this epoch
            for module in self.batch_norms:
                module.reset_running_stats()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Resumed inside an epoch, Lightning calls no on_train_epoch_start for it: SWALR (with its saved state) has
        # to take over here, else the resumed epoch follows the stage's schedule and the annealing ends late.
        if trainer.fit_loop.restarted_mid_epoch or trainer.fit_loop.restarted_on_epoch_end:
            self.on_train_epoch_start(trainer, pl_module)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if not self.batch_norms or not self.active(trainer):
            return
        x = read_batch(pl_module, batch).inputs
        # The batch the training step sees (augmented, on the device); dropout stays off, so no randomness is used.
        with torch.no_grad(), trainer.precision_plugin.forward_context():
            self._average_model(move_data_to_device(x, self.batch_norms[0].running_mean.device))  # a tensor, Padded

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.active(trainer):
            swap(pl_module, self._average_model)
            self.swapped = True

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.swapped:
            swap(pl_module, self._average_model)
            self.swapped = False

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning's transfer copies the parameters only; the buffers hold the recomputed statistics. Also after
        # early stopping or max_steps, which end the run before the last SWA epoch.
        if self.active(trainer):
            copy_weights(self._average_model, pl_module)
        else:
            rank_zero_warn(
                f"SWA never started: the run ended at epoch {trainer.current_epoch}, before swa_epoch_start="
                f"{self._swa_epoch_start}; the model keeps its trained weights."
            )

    def state_dict(self) -> dict[str, Any]:
        # The average is the checkpoint's state_dict (on_save_checkpoint): not a second copy here.
        return {**super().state_dict(), "average_model_state": None}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        average = state_dict.get("average_model_state") or self.loaded_average
        if self._average_model is not None:  # (none outside fit)
            super().load_state_dict({**state_dict, "average_model_state": average or self._average_model.state_dict()})

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if self.active(trainer):
            checkpoint["current_model_state"] = checkpoint["state_dict"]
            checkpoint["state_dict"] = self._average_model.state_dict()

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        # Resuming a fit in the SWA phase: train on from the raw weights; load_state_dict restores the average.
        if trainer.state.fn == TrainerFn.FITTING and "current_model_state" in checkpoint:
            self.loaded_average = checkpoint["state_dict"]
            pl_module.load_state_dict(checkpoint["current_model_state"])


def swap(a: nn.Module, b: nn.Module) -> None:
    """Exchange the weights and buffers of two copies of one model, in place."""
    for x, y in zip(tensors(a), tensors(b), strict=True):
        tmp = x.detach().clone()
        x.detach().copy_(y.detach())
        y.detach().copy_(tmp)


def copy_weights(src: nn.Module, dst: nn.Module) -> None:
    for x, y in zip(tensors(src), tensors(dst), strict=True):
        y.detach().copy_(x.detach())
