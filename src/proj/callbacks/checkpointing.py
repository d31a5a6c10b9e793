"""Checkpoint files: written atomically, `last.ckpt` kept current, relocatable, and where a checkpoint's run is.

- AtomicCheckpointIO: a checkpoint is first written next to its target and then renamed over it: a crash or
  a kill while saving leaves the previous `last.ckpt` intact instead of a truncated file (a rename is atomic
  on one filesystem, and replaces a symbolic link itself, not its target).
- ModelCheckpointEveryEpoch: Lightning's ModelCheckpoint, with `save_last` meaning the last epoch again, a
  `last.ckpt` that exists complete at every instant, and paths stored relative to its folder.
- save_last_atomically: write last.ckpt outside ModelCheckpoint (preemption), with the same guarantee.
- run_dir_of_checkpoint: logs/<name>/version_<n>/ from logs/<name>/version_<n>/checkpoints/x.ckpt.
"""

from __future__ import annotations

import os
import shutil
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
    epoch that saves nothing else writes last.ckpt as a file, replacing the link. Either way the new last.ckpt
    is made under a temporary name and renamed over the old one: a kill at any instant leaves a complete one.

    The paths in its state (best, k-th best, last) are stored relative to its folder and resolved against the
    folder it saves into now: a run directory copied or moved elsewhere resumes as it would have in place
    (Lightning stores the folder's path and drops most of the state when it differs, then writes last-v1.ckpt).
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
                if not writes_atomically(trainer):  # else the new file is renamed over the link
                    remove_link(trainer, self.last_model_path)
                internals.save(self, trainer, self.last_model_path)
            else:
                internals.save_last(self, trainer)

    def _link_checkpoint(self, trainer: L.Trainer, filepath: str, linkpath: str) -> None:
        """Lightning's link of last.ckpt to the checkpoint just saved, made atomically (Lightning removes
        last.ckpt first), and only to a checkpoint saved at this step: in an epoch without a new best Lightning
        relinks last.ckpt to the older best, which `save_last_if_nothing_saved` then replaces by the file."""
        if internals.saved_at_this_step(self, trainer):  # overrides a private method: see proj.compat
            link_atomically(trainer, filepath, linkpath)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["dirpath"] = "."  # the folder the checkpoint is in: the paths below are relative to it
        for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
            state[key] = self.relative(state[key])
        state["best_k_models"] = {self.relative(path): score for path, score in state["best_k_models"].items()}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Paths from checkpoints written before they were relative are moved into the current folder too.
        saved_in = state_dict.get("dirpath") or "."
        state = {**state_dict, "dirpath": self.dirpath}
        for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
            if key in state:
                state[key] = self.resolve(state[key], saved_in)
        if "best_k_models" in state:
            state["best_k_models"] = {self.resolve(p, saved_in): v for p, v in state["best_k_models"].items()}
        super().load_state_dict(state)
        if self.save_last and not self.last_model_path and "{" not in self.CHECKPOINT_NAME_LAST:
            # Saved before its first last.ckpt (a best checkpoint that last.ckpt links to): that last.ckpt is
            # this run's own, to be replaced, not a stranger's that Lightning would write last-v1.ckpt beside.
            self.last_model_path = os.path.join(self.dirpath, self.CHECKPOINT_NAME_LAST + self.FILE_EXTENSION)

    def relative(self, path: str) -> str:
        """`path` relative to this callback's folder when it lies inside it, else unchanged."""
        if not path or not self.dirpath:
            return path
        inside = os.path.relpath(os.path.abspath(path), os.path.abspath(self.dirpath))
        return path if inside.startswith(os.pardir) else inside

    def resolve(self, path: str, saved_in: str) -> str:
        """A stored path, relative to the folder it was saved in, as a path in this callback's folder."""
        if not path or not self.dirpath:
            return path
        inside = path if saved_in == "." else os.path.relpath(path, saved_in)
        if os.path.isabs(inside) or inside.startswith(os.pardir):
            return path  # outside the checkpoint folder: left as it was
        return os.path.join(self.dirpath, inside)


def writes_atomically(trainer: L.Trainer) -> bool:
    """Whether this trainer's checkpoints are written to a temporary file and renamed over their target."""
    return isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


def save_last_atomically(trainer: L.Trainer, path: str | Path) -> None:
    """Save the trainer's state as last.ckpt at `path`, even where last.ckpt is now a link to the best
    checkpoint, so that a complete last.ckpt exists at every instant (what Preemption calls on a signal).

    The file is written under a temporary name and renamed over the old file or link (never written through
    the link, which would overwrite the best checkpoint)."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.saving")
    trainer.save_checkpoint(partial)
    if trainer.is_global_zero:
        if partial.is_dir() and os.path.lexists(path):  # a sharded checkpoint is a folder, which a rename
            remove(path)  # cannot put over a file, a link or a non-empty folder: the one short window left
        os.replace(partial, path)
    trainer.strategy.barrier()


def link_atomically(trainer: L.Trainer, filepath: str, linkpath: str) -> None:
    """Make `linkpath` a relative symbolic link to `filepath` (a copy where links are not allowed) on rank 0:
    made under a temporary name, then renamed over the old last.ckpt."""
    if trainer.is_global_zero and os.path.abspath(filepath) != os.path.abspath(linkpath):
        partial = os.path.join(os.path.dirname(linkpath), f".{os.path.basename(linkpath)}.linking")
        if os.path.lexists(partial):
            os.remove(partial)
        try:
            os.symlink(os.path.relpath(filepath, os.path.dirname(linkpath)), partial)
        except OSError:  # on Windows, links need special permissions: copy the file
            shutil.copy(filepath, partial)
        if os.path.isdir(linkpath) and not os.path.islink(linkpath):
            remove(linkpath)  # a sharded last checkpoint (a folder) cannot be renamed over
        os.replace(partial, linkpath)
    trainer.strategy.barrier()


def remove(path: str | Path) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.remove(path)


def remove_link(trainer: L.Trainer, path: str | Path) -> None:
    """Remove `path` if it is a symbolic link (last.ckpt pointing at the best checkpoint), on rank 0, before
    it is written by a checkpoint writer that does not rename (a sharded FSDP checkpoint is a directory written
    into, and a plain torch.save opens the link's target): a save through the link would overwrite the best."""
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
