"""RngState: the random number generators in checkpoints, so a resumed run shuffles, drops out and augments
exactly as the uninterrupted run would have."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback


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
