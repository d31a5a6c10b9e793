"""Preemption: on SIGTERM or SIGUSR1 every rank stops after the same batch, saves last.ckpt (and under SLURM
lets Lightning requeue the job), and the process exits with 128 + the signal."""

from __future__ import annotations

import signal
import threading
from typing import Any

import lightning.pytorch as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

from proj.callbacks.checkpointing import last_checkpoint_path, run_dir_of_checkpoint, save_last_atomically
from proj.compat import accumulating, stop_after_this_batch


class Preemption(Callback):
    """Save `last.ckpt` when the job is told to stop (SIGTERM, or SIGUSR1 sent ahead of a time limit).

    The signal only raises a flag. At the end of each training batch that closes an accumulation window (every
    batch without gradient accumulation) the ranks agree whether any of them got one (a scheduler may signal only
    one process); if so every rank stops there, after the batch's optimizer
    and scheduler steps, through Lightning's SIGTERMException. That replaces Lightning's own SIGTERM handler,
    which tells the other ranks with a broadcast from inside the handler, at whatever point each rank is:
    it can pair with an unrelated collective and hang, and the ranks can stop at different batches.
    The process then exits with 128 + the signal (proj.cli.main), so a scheduler does not take it for done.
    Resume with `python -m proj fit --resume logs/<name>/version_<n>`: it continues mid-epoch, bitwise.

    Under SLURM with auto-requeue Lightning has a SIGUSR1 handler that saves hpc_ckpt_<n>.ckpt in the
    trainer's default_root_dir and runs `scontrol requeue`. It is called at that same stopping point
    (after last.ckpt is saved) instead of whenever the signal lands, often mid-batch, where the checkpoint
    would redo or skip a batch; the requeued job's `fit` restores the hpc checkpoint by itself.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.handled: dict[int, Any] = {}  # signal: the handler it had before

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signals reach the main thread only (a Ray trial runs in a worker thread): Lightning's own
        self.signum = None
        self.take(signal.SIGTERM)  # Lightning set its handler in fit, before this hook
        if hasattr(signal, "SIGUSR1") and signal.getsignal(signal.SIGUSR1) is not signal.SIG_IGN:
            self.take(signal.SIGUSR1)  # its handler (SLURM's requeue) is called when every rank has stopped

    def take(self, signum: int) -> None:
        self.handled[signum] = signal.signal(signum, self.request)

    def request(self, signum: int, frame: Any) -> None:
        self.signum = self.signum or signum  # nothing else here: a signal can arrive inside any call

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if accumulating(trainer):  # mid-window: its summed gradients would be in no checkpoint; stop at its end
            return  # (every rank is at the same batch of the window: all of them skip the all-reduce below alike)
        stop = self.signum is not None
        if trainer.world_size > 1:  # one small all-reduce a batch: every rank stops at the same batch
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if stop:
            stop_after_this_batch(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        previous = self.handled.get(signal.SIGUSR1) if self.signum == getattr(signal, "SIGUSR1", None) else None
        self.restore()
        if not isinstance(exception, SIGTERMException):
            return
        if exception.code is None:  # the exit status a process killed by the signal would have
            exception.code = 128 + (self.signum or signal.SIGTERM)
        path = last_checkpoint_path(trainer)
        if path is not None:
            save_last_atomically(trainer, path)  # over the old last.ckpt (or its link to the best) in one rename
            rank_zero_info(f"Preempted: saved {path}. Resume with --resume {run_dir_of_checkpoint(path)}")
        if callable(previous):
            previous(self.signum, None)  # Lightning's SLURM requeue: hpc checkpoint, `scontrol requeue <job id>`

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.restore()

    def restore(self) -> None:
        for signum, handler in self.handled.items():
            if signal.getsignal(signum) == self.request:
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self.handled = {}
