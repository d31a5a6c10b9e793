"""The template's own callbacks: only what Lightning does not ship. Named in YAML by class_path.

- FiniteLossGuard: stop at the first non-finite training loss, naming the step, before a checkpoint of
  ruined weights can replace the last good one.
- Preemption: on SIGTERM (or SIGUSR1 outside SLURM's requeue), save last.ckpt before the process exits.
- RngState: keep the random number generators in checkpoints, so a resumed run shuffles, drops out and
  augments exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import random
import signal
import threading
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException


class NonFiniteLossError(FloatingPointError):
    pass


class FiniteLossGuard(Callback):
    """Raise at the first NaN / inf training loss, naming the step, before the next checkpoint is written.

    Checking a GPU tensor forces the host to wait for the device, so the flag is kept on the device and read
    only every `check_every_n_steps` steps and before validation / epoch end (when checkpoints are saved).
    """

    def __init__(self, check_every_n_steps: int = 50) -> None:
        self.check_every_n_steps = check_every_n_steps
        self.first_bad_step: torch.Tensor | None = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, *args: Any) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        step = torch.tensor(trainer.global_step, device=loss.device)
        if self.first_bad_step is None or self.first_bad_step.device != loss.device:
            self.first_bad_step = torch.tensor(-1, device=loss.device)
        bad_now = ~torch.isfinite(loss.detach()) & (self.first_bad_step < 0)
        self.first_bad_step = torch.where(bad_now, step, self.first_bad_step)
        if trainer.global_step % self.check_every_n_steps == 0:
            self.check(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check(trainer)  # validation ends with a checkpoint: never save ruined weights

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check(trainer)

    def check(self, trainer: L.Trainer) -> None:
        if self.first_bad_step is None or int(self.first_bad_step) < 0:
            return
        step = int(self.first_bad_step)
        ckpt = trainer.checkpoint_callback
        kept = getattr(ckpt, "last_model_path", "") or getattr(ckpt, "best_model_path", "") or "none yet"
        raise NonFiniteLossError(
            f"train/loss became non-finite (NaN or inf) at optimizer step {step} (epoch {trainer.current_epoch}); "
            f"training stopped. The last good checkpoint is kept: {kept}. Lower the learning rate, set "
            "trainer.gradient_clip_val, or check the data for NaN."
        )


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
            trainer.save_checkpoint(path)
            rank_zero_info(f"Preempted: saved {path}. Resume with --resume {path.parent.parent}")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if (
            self.requested
            or not hasattr(signal, "SIGUSR1")
            or threading.current_thread() is not threading.main_thread()
        ):
            return
        if signal.getsignal(signal.SIGUSR1) == self._request:
            signal.signal(signal.SIGUSR1, signal.SIG_DFL)


def last_checkpoint_path(trainer: L.Trainer) -> Path | None:
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.dirpath:
            return Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
    return None


class RngState(Callback):
    """Saves the torch, numpy and Python RNG states in checkpoints and restores them on resume.

    They are restored when the checkpoint is loaded, before the resumed epoch creates its DataLoader
    iterator (whose shuffle seed comes from torch's RNG). Plain lists, so weights-only loading accepts them.
    """

    def state_dict(self) -> dict[str, Any]:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        version, state, py_gauss = random.getstate()
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
            "python": [version, list(state), py_gauss],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        if state_dict["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])
        kind, keys, pos, has_gauss, gauss = state_dict["numpy"]
        np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
        version, state, py_gauss = state_dict["python"]
        random.setstate((version, tuple(state), py_gauss))
