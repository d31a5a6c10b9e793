"""Checkpoint files: written atomically, `last.ckpt` kept current, and where a checkpoint's run directory is.

- AtomicCheckpointIO: a checkpoint is first written next to its target and then renamed over it: a crash or
  a kill while saving leaves the previous `last.ckpt` intact instead of a truncated file (a rename is atomic
  on one filesystem).
- ModelCheckpointEveryEpoch: Lightning's ModelCheckpoint, with `save_last` meaning the last epoch again.
- run_dir_of_checkpoint: logs/<name>/version_<n>/ from logs/<name>/version_<n>/checkpoints/x.ckpt.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning.pytorch as L
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from proj.compat import CheckpointInternals as internals


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if not isinstance(get_filesystem(path), LocalFileSystem):  # remote stores: nothing to rename
            return super().save_checkpoint(checkpoint, path, storage_options)
        target = Path(path)
        partial = target.with_name(f".{target.name}.partial")
        super().save_checkpoint(checkpoint, partial, storage_options)
        os.replace(partial, target)


class ModelCheckpointEveryEpoch(ModelCheckpoint):
    """Lightning's ModelCheckpoint, whose `last.ckpt` is written after every epoch's checkpoint point.

    Since Lightning 2.6, `save_last` writes last.ckpt only when a top-k checkpoint is saved at the same step:
    with `save_top_k: 1` that is only when the monitored value improves, so a crash lost every epoch since the
    last improvement (up to EarlyStopping's patience). Here last.ckpt is also written when nothing else was,
    at the same cadence (`every_n_epochs`) as the top-k checkpoints.

    With `save_last: link` (the default config), an epoch that saves a new best makes last.ckpt a relative
    symbolic link to it instead of writing the same weights twice (a copy where links are not allowed); an
    epoch that saves nothing else writes last.ckpt as a file, replacing the link.
    """

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not internals.saves_on_train_epoch_end(self, trainer):
            self.save_last_if_nothing_saved(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if internals.saves_on_train_epoch_end(self, trainer):
            self.save_last_if_nothing_saved(trainer)

    def save_last_if_nothing_saved(self, trainer: L.Trainer) -> None:
        # "skip" is also true when something was saved at this step: then last.ckpt is already current.
        if not self.save_last or internals.skips_saving(self, trainer):
            return
        every = internals.every_n_epochs(self)
        if every >= 1 and (trainer.current_epoch + 1) % every == 0:
            if self.save_last == "link":  # a link would point at the older best checkpoint: write the file
                candidates = internals.candidates(self, trainer)
                self.last_model_path = self.format_checkpoint_name(candidates, self.CHECKPOINT_NAME_LAST)
                remove_link(trainer, self.last_model_path)
                internals.save(self, trainer, self.last_model_path)
            else:
                internals.save_last(self, trainer)


def remove_link(trainer: L.Trainer, path: str | Path) -> None:
    """Remove `path` if it is a symbolic link (last.ckpt pointing at the best checkpoint), on rank 0, before
    it is written: a save through the link would overwrite the best checkpoint (a sharded FSDP checkpoint is a
    directory written into, and a plain torch.save opens the link's target)."""
    if trainer.is_global_zero and os.path.islink(path):
        os.remove(path)
    trainer.strategy.barrier()


def last_checkpoint_path(trainer: L.Trainer) -> Path | None:
    """Where the run's last.ckpt is written (the first ModelCheckpoint with a directory), or None."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.dirpath:
            return Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
    return None


def run_dir_of_checkpoint(ckpt_path: str | Path) -> Path:
    """The run directory a checkpoint belongs to: logs/<name>/version_<n>/ for .../checkpoints/x.ckpt, else the
    checkpoint's own folder (a checkpoint copied elsewhere)."""
    path = Path(ckpt_path)
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent
