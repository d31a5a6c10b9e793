"""Every touch of private Lightning (and torch) API, in one place, each with why and a check.

Lightning has no public way to do these things. Each private member is checked when this module is first
imported: on a Lightning release where one is gone, the template stops with a message naming the member and
what uses it, instead of an AttributeError in the middle of a run. Checked on lightning 2.6 and torch 2.11-2.13.
"""

from __future__ import annotations

import warnings
from typing import Any

import lightning
import lightning.pytorch as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loops.fit_loop import _FitLoop
from lightning.pytorch.strategies import ModelParallelStrategy
from lightning.pytorch.trainer.connectors.logger_connector.logger_connector import _LoggerConnector
from lightning.pytorch.trainer.connectors.signal_connector import _SignalConnector
from torch.optim.lr_scheduler import SequentialLR

# (owner, member, what the template uses it for)
PRIVATE = (
    (_LoggerConnector, "should_update_logs", "logging per-step values only on steps that reach the loggers"),
    (_FitLoop, "_should_accumulate", "Throughput: measuring at the batch that closes an accumulation window"),
    (_FitLoop, "_load_combined_loader_states", "RngState: a run resumed mid-epoch continues its batch order"),
    # the connector whose received_sigterm flag the loops test (an instance attribute, set by this handler)
    (_SignalConnector, "_sigterm_notifier_fn", "Preemption: every rank stops at the same batch on SIGTERM"),
    (ModelCheckpoint, "_should_save_on_train_epoch_end", "last.ckpt written every epoch"),
    (ModelCheckpoint, "_should_skip_saving_checkpoint", "last.ckpt written every epoch"),
    (ModelCheckpoint, "_monitor_candidates", "last.ckpt written every epoch"),
    (ModelCheckpoint, "_save_checkpoint", "last.ckpt written every epoch"),
    (ModelCheckpoint, "_save_last_checkpoint", "last.ckpt written every epoch"),
    (ModelCheckpoint, "_link_checkpoint", "last.ckpt linked atomically (overridden in ModelCheckpointEveryEpoch)"),
    (LightningCLI, "_parse_ckpt_path", "reading a --ckpt_path's hyper-parameters as --weights_only says (cli/run.py)"),
    (ModelParallelStrategy, "setup_environment", "FSDP2Strategy: a data-parallel mesh over every process"),
)


class LightningVersionError(RuntimeError):
    pass


def check_private_api() -> None:
    for owner, member, purpose in PRIVATE:
        if not hasattr(owner, member):
            raise LightningVersionError(
                f"lightning {lightning.__version__} has no {owner.__name__}.{member}, which proj uses for {purpose}. "
                "Install the version in constraints.txt, or adapt src/proj/compat.py."
            )


check_private_api()

# Lightning 2.6's _pytree builds torch's LeafSpec itself, which torch 2.13 deprecates: two warnings a fit, about
# Lightning's own code, that a user can do nothing about. Silenced for that module and message only.
warnings.filterwarnings(
    "ignore", message=r".*isinstance\(treespec, LeafSpec\).*", module=r"lightning\.pytorch\.utilities\._pytree"
)


def logs_this_step(trainer: L.Trainer | None) -> bool:
    """Whether the values logged at this training step reach the loggers: every `trainer.log_every_n_steps`
    (every step under fast_dev_run), as Lightning decides; true without a trainer (a module called directly).

    Private: Lightning decides this in its logger connector and exposes no public flag."""
    if trainer is None:
        return True
    return trainer._logger_connector.should_update_logs or bool(trainer.fast_dev_run)


def accumulating(trainer: L.Trainer) -> bool:
    """True on a batch that does not close its accumulation window (no optimizer step after it).

    Private: the fit loop's own test, which also knows that the last batch of an epoch always steps."""
    return trainer.fit_loop._should_accumulate()


def restore_train_loader_state(trainer: L.Trainer) -> None:
    """Give the training loader its position from the checkpoint (a run resumed mid-epoch), if it has one.

    Private: Lightning 2.6 loads it only in `FitLoop.setup_data` when that builds the loader, but
    `trainer.estimated_stepping_batches` (a schedule's horizon, in configure_optimizers) builds it earlier,
    before the checkpoint is restored, and the saved position is then never loaded. A no-op unless resuming."""
    trainer.fit_loop._load_combined_loader_states()


def stop_after_this_batch(trainer: L.Trainer) -> None:
    """Raise Lightning's SIGTERMException at the end of this training batch, as a received SIGTERM does.

    Private: the flag that Lightning's own SIGTERM handler sets; its loops test it at the end of every batch
    (after the scheduler step and the progress counters, which is what a bitwise resume needs) and of every
    epoch. Set on every rank at the same batch, every rank stops there."""
    trainer._signal_connector.received_sigterm = True


def set_update_count(metric: Any, count: int) -> None:
    """How many updates a torchmetrics Metric has had, as restored from a checkpoint with its states.

    Private (torchmetrics): its public `update_count` has no setter, and a metric whose count is 0 warns
    "compute called before update" and computes nothing, whatever its states hold."""
    metric._update_count = count


def chained_schedulers(scheduler: Any) -> list[Any]:
    """The phases of a SequentialLR (torch keeps them in a private list), or the scheduler itself."""
    if isinstance(scheduler, SequentialLR):
        return list(scheduler._schedulers)
    return [scheduler]


class CheckpointInternals:
    """ModelCheckpoint's private steps that writing last.ckpt every epoch needs (see callbacks/checkpointing.py):
    when this callback saves, whether anything was saved at this step, and the save itself."""

    @staticmethod
    def saves_on_train_epoch_end(callback: ModelCheckpoint, trainer: L.Trainer) -> bool:
        return callback._should_save_on_train_epoch_end(trainer)

    @staticmethod
    def skips_saving(callback: ModelCheckpoint, trainer: L.Trainer) -> bool:
        return callback._should_skip_saving_checkpoint(trainer)

    @staticmethod
    def every_n_epochs(callback: ModelCheckpoint) -> int:
        return callback._every_n_epochs

    @staticmethod
    def candidates(callback: ModelCheckpoint, trainer: L.Trainer) -> dict[str, Any]:
        return callback._monitor_candidates(trainer)

    @staticmethod
    def saved_at_this_step(callback: ModelCheckpoint, trainer: L.Trainer) -> bool:
        return getattr(callback, "_last_global_step_saved", None) == trainer.global_step

    @staticmethod
    def save(callback: ModelCheckpoint, trainer: L.Trainer, path: str) -> None:
        callback._save_checkpoint(trainer, path)

    @staticmethod
    def save_last(callback: ModelCheckpoint, trainer: L.Trainer) -> None:
        callback._save_last_checkpoint(trainer, callback._monitor_candidates(trainer))


def set_data_parallel_size(strategy: ModelParallelStrategy, size: int) -> None:
    """ModelParallelStrategy sizes its data-parallel mesh by the node count; FSDP2 alone wants every process."""
    strategy._data_parallel_size = size
