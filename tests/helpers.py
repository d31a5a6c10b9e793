"""Callbacks that tests put into real `python -m proj` processes (PYTHONPATH=tests), by class_path."""

import json
import os
import signal
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback


class KillAt(Callback):
    """Send `signal` to this process at (epoch, batch) of training, once: a marker file remembers it."""

    def __init__(self, epoch: int, batch: int, signal: str = "SIGKILL", marker: str = "killed.marker"):
        self.epoch, self.batch, self.signal, self.marker = epoch, batch, signal, Path(marker)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch) and not self.marker.exists():
            self.marker.write_text(f"{trainer.global_step}")
            os.kill(os.getpid(), getattr(signal, self.signal))


class RecordRank(Callback):
    """Write what each rank sees to record_rank<r>.json: world size, its sampler share, the parameter type."""

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch != 0:
            return
        sampler = trainer.train_dataloader.sampler  # the device-resident path is its own sampler
        sampler.set_epoch(0)
        share = sampler.epoch_indices() if hasattr(sampler, "epoch_indices") else sampler
        # A block of the body: FSDP2 keeps the root's own parameters unsharded between forward and backward.
        param = next(pl_module.net.body.parameters())
        record = {
            "world_size": trainer.world_size,
            "share": [int(i) for i in share],
            "sampler": type(sampler).__name__,
            "param_type": type(param).__name__,
            "param_is_dtensor": type(param).__name__ == "DTensor" or hasattr(param, "to_local"),
            "local_numel": param.to_local().numel() if hasattr(param, "to_local") else param.numel(),
            "full_numel": param.numel(),
            "torch": torch.__version__,
        }
        Path(f"record_rank{trainer.global_rank}.json").write_text(json.dumps(record))
