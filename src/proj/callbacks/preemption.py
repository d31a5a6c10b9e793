"""Preemption: on SIGTERM (or SIGUSR1 outside SLURM's requeue), save last.ckpt before the process exits."""

from __future__ import annotations

import signal
import threading
from typing import Any

import lightning.pytorch as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

from proj.callbacks.checkpointing import last_checkpoint_path, remove_link, run_dir_of_checkpoint


class Preemption(Callback):
    """Save `last.ckpt` when the job is told to stop (SIGTERM, or SIGUSR1 sent ahead of a time limit).

    Lightning turns SIGTERM into a SIGTERMException between batches; this saves the state at that point.
    Under SLURM with auto-requeue Lightning owns SIGUSR1 (it saves and requeues), so it is left alone there.
    Resume with `python -m proj fit --resume logs/<name>/version_<n>`.
    """

    def __init__(self) -> None:
        self.requested = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not hasattr(signal, "SIGUSR1") or threading.current_thread() is not threading.main_thread():
            return  # signals reach the main thread only (a Ray trial runs in a worker thread)
        if signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, None):
            signal.signal(signal.SIGUSR1, self._request)

    def _request(self, signum: int, frame: Any) -> None:
        self.requested = True

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if self.requested:
            raise SIGTERMException()  # handled like SIGTERM: on_exception below saves, then the process exits

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException):
            return
        path = last_checkpoint_path(trainer)
        if path is not None:
            remove_link(trainer, path)  # last.ckpt may be a link to the best checkpoint: never write through it
            trainer.save_checkpoint(path)
            rank_zero_info(f"Preempted: saved {path}. Resume with --resume {run_dir_of_checkpoint(path)}")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if (
            self.requested
            or not hasattr(signal, "SIGUSR1")
            or threading.current_thread() is not threading.main_thread()
        ):
            return
        if signal.getsignal(signal.SIGUSR1) == self._request:
            signal.signal(signal.SIGUSR1, signal.SIG_DFL)
