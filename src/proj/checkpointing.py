"""Checkpoint files: written atomically, read with torch's weights-only unpickler.

A checkpoint is first written next to its target and then renamed over it: a crash or a kill while saving
leaves the previous `last.ckpt` intact instead of a truncated file (a rename is atomic on one filesystem).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if not isinstance(get_filesystem(path), LocalFileSystem):  # remote stores: nothing to rename
            return super().save_checkpoint(checkpoint, path, storage_options)
        target = Path(path)
        partial = target.with_name(f".{target.name}.partial")
        super().save_checkpoint(checkpoint, partial, storage_options)
        os.replace(partial, target)
