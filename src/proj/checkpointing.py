"""Checkpoint files: written atomically, read with torch's weights-only unpickler, `last.ckpt` kept current.

- AtomicCheckpointIO: a checkpoint is first written next to its target and then renamed over it: a crash or
  a kill while saving leaves the previous `last.ckpt` intact instead of a truncated file (a rename is atomic
  on one filesystem).
- ModelCheckpoint: Lightning's, with `save_last` meaning the last epoch again (see the class).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning.pytorch as L
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch import callbacks
from lightning.pytorch.plugins.io import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if not isinstance(get_filesystem(path), LocalFileSystem):  # remote stores: nothing to rename
            return super().save_checkpoint(checkpoint, path, storage_options)
        target = Path(path)
        partial = target.with_name(f".{target.name}.partial")
        super().save_checkpoint(checkpoint, partial, storage_options)
        os.replace(partial, target)


class ModelCheckpoint(callbacks.ModelCheckpoint):
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
        if not self._should_save_on_train_epoch_end(trainer):
            self.save_last_if_nothing_saved(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self.save_last_if_nothing_saved(trainer)

    def save_last_if_nothing_saved(self, trainer: L.Trainer) -> None:
        # "skip" is also true when something was saved at this step: then last.ckpt is already current.
        if not self.save_last or self._should_skip_saving_checkpoint(trainer):
            return
        if self._every_n_epochs >= 1 and (trainer.current_epoch + 1) % self._every_n_epochs == 0:
            if self.save_last == "link":  # a link would point at the older best checkpoint: write the file
                self.last_model_path = self.format_checkpoint_name(
                    self._monitor_candidates(trainer), self.CHECKPOINT_NAME_LAST
                )
                unlink(trainer, self.last_model_path)
                self._save_checkpoint(trainer, self.last_model_path)
            else:
                self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


def unlink(trainer: L.Trainer, path: str | Path) -> None:
    """Remove `path` if it is a symbolic link (last.ckpt pointing at the best checkpoint), on rank 0, before
    it is written: a save through the link would overwrite the best checkpoint (a sharded FSDP checkpoint is a
    directory written into, and a plain torch.save opens the link's target)."""
    if trainer.is_global_zero and os.path.islink(path):
        os.remove(path)
    trainer.strategy.barrier()
