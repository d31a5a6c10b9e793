"""The template's own callbacks: only what Lightning does not ship. Named in YAML by class_path.

- FiniteLossGuard: stop at the first non-finite training loss, naming the step, before a checkpoint of
  ruined weights can replace the last good one.
- Preemption: on SIGTERM (or SIGUSR1 outside SLURM's requeue), save last.ckpt before the process exits.
- RngState: keep the random number generators in checkpoints, so a resumed run shuffles, drops out and
  augments exactly as the uninterrupted run would have.
- PredictionWriter: `predict` writes predictions.csv into the run directory.
- GradualPruning: Lightning's ModelPruning with a gradual schedule, conv / linear weights only.
"""

from __future__ import annotations

import csv
import random
import signal
import threading
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, Callback, ModelCheckpoint, ModelPruning
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import nn

from proj.checkpointing import unlink


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
            unlink(trainer, path)  # last.ckpt may be a link to the best checkpoint: never write through it
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


class PredictionWriter(BasePredictionWriter):
    """`predict` writes predictions.csv: an id per input, the predicted class and every class probability.

    It lands in the run directory of the checkpoint being predicted from (logs/<name>/version_<n>/), or in
    the new run's directory when no checkpoint is given. Under DDP each rank writes predictions.rank<r>.csv.
    """

    def __init__(self, filename: str = "predictions.csv") -> None:
        super().__init__(write_interval="batch")
        self.filename = filename
        self.path: Path | None = None

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        ckpt = trainer.ckpt_path
        run_dir = (
            Path(ckpt).parent.parent if ckpt and Path(ckpt).parent.name == "checkpoints" else Path(trainer.log_dir)
        )
        name = self.filename if trainer.world_size == 1 else f"{Path(self.filename).stem}.rank{trainer.global_rank}.csv"
        self.path = run_dir / name
        self.path.parent.mkdir(parents=True, exist_ok=True)
        dm = trainer.datamodule
        names = class_names(dm)
        split = "predict" if "predict" in getattr(dm, "splits", {}) else dm.hparams.get("predict_split", "test")
        self.ids = dm.sample_ids(split) if hasattr(dm, "sample_ids") else None
        with open(self.path, "w", newline="") as f:
            csv.writer(f).writerow(["id", "predicted", *(f"p_{n}" for n in names)])
        self.names = names

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
        probabilities = prediction.float().cpu()
        ids = [self.ids[i] if self.ids is not None else i for i in batch_indices] if batch_indices else None
        with open(self.path, "a", newline="") as f:
            writer = csv.writer(f)
            for row, p in enumerate(probabilities):
                sample = ids[row] if ids else f"{batch_idx}:{row}"
                writer.writerow([sample, self.names[int(p.argmax())], *(f"{v:.6g}" for v in p.tolist())])

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        rank_zero_info(f"predictions written to {self.path}")


def class_names(datamodule: Any) -> list[str]:
    names = getattr(datamodule, "classes", None)
    if names:
        return [str(n) for n in names]
    return [str(i) for i in range(datamodule.num_classes)]


class GradualPruning(ModelPruning):
    """Global L1 unstructured pruning of conv / linear weights, raised gradually to `amount` (Zhu & Gupta 2017).

    Sparsity follows s(e) = amount * (1 - (1 - p)^3), p rising linearly from `start_epoch` to `end_epoch`:
    most weights go early, while the network can still recover. Each epoch prunes the fraction of the
    remaining weights that reaches s(e). BatchNorm and biases are never pruned. The pruning is made
    permanent in checkpoints and at the end of training, so exported weights are plain tensors with zeros.
    The global sparsity is logged as pruning/sparsity.
    """

    def __init__(self, amount: float = 0.5, start_epoch: int = 0, end_epoch: int = 10, verbose: int = 0) -> None:
        if not 0.0 <= amount < 1.0 or end_epoch < start_epoch:
            raise ValueError(f"GradualPruning(amount={amount}, start_epoch={start_epoch}, end_epoch={end_epoch})")
        self.target, self.start_epoch, self.end_epoch = amount, start_epoch, end_epoch
        super().__init__(
            pruning_fn="l1_unstructured",
            amount=self.epoch_amount,
            use_global_unstructured=True,
            make_pruning_permanent=True,
            verbose=verbose,
        )

    def sparsity_at(self, epoch: int) -> float:
        if epoch < self.start_epoch:
            return 0.0
        progress = min(1.0, (epoch - self.start_epoch + 1) / (self.end_epoch - self.start_epoch + 1))
        return self.target * (1 - (1 - progress) ** 3)

    def epoch_amount(self, epoch: int) -> float:
        before, after = self.sparsity_at(epoch - 1), self.sparsity_at(epoch)
        return 1 - (1 - after) / (1 - before)

    def filter_parameters_to_prune(self, parameters_to_prune: Any = ()) -> Any:
        prunable = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
        return [(m, name) for m, name in parameters_to_prune if isinstance(m, prunable) and name == "weight"]

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Early stopping must not cut the schedule short: the sparsity would fall short of `amount`.
        if not trainer.sanity_checking and trainer.current_epoch < self.end_epoch:
            trainer.should_stop = False

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        zeros = sum(int((getattr(m, n) == 0).sum()) for m, n in self._parameters_to_prune)
        total = sum(getattr(m, n).numel() for m, n in self._parameters_to_prune)
        pl_module.log("pruning/sparsity", zeros / max(total, 1))
