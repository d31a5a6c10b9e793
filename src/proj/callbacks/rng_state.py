"""RngState: the random number generators in checkpoints, so a resumed run shuffles, drops out and augments
exactly as the uninterrupted run would have, on every rank, also when it resumes in the middle of an epoch."""

from __future__ import annotations

import random
from typing import Any

import lightning.pytorch as L
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback

from proj.compat import restore_train_loader_state


class RngState(Callback):
    """Saves the torch, numpy and Python RNG states of every rank in checkpoints and restores them on resume.

    Lightning writes the callback states of rank 0 only, so each rank's states are gathered into it (keyed
    by rank) and each rank restores its own: ranks seeded apart (say, for different augmentations) keep
    their own streams. They are restored when the checkpoint is loaded, before anything of the resumed epoch
    draws. Plain lists, so weights-only loading accepts them. A run resumed on another number of processes
    gives the new ranks rank 0's states.

    At the start of a resumed fit this also hands the training loader its saved position, so a run resumed
    mid-epoch continues with the next batch of the epoch's order (see compat.restore_train_loader_state).
    """

    def state_dict(self) -> dict[str, Any]:
        # Called on every rank while a checkpoint is made (trainer.save_checkpoint runs on all of them).
        mine = local_state()
        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return {"ranks": [mine]}
        ranks: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(ranks, mine)
        return {"ranks": ranks}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        ranks = state_dict.get("ranks", [state_dict])  # checkpoints before the per-rank states hold one
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        load_local_state(ranks[rank] if rank < len(ranks) else ranks[0])

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        restore_train_loader_state(trainer)


def local_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
        "python": [version, list(state), py_gauss],
    }


def load_local_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, state_, py_gauss = state["python"]
    random.setstate((version, tuple(state_), py_gauss))
