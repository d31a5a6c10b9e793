"""What a trainer config asks of this machine, checked before anything is built or a process is spawned.

The files of configs/trainer/ must run as written on a CPU machine, or be refused in one line naming the key:
DESIGN promises DDP on CPUs (gloo), while a GPU-only setting would fail deep inside Lightning or torch, once
per spawned process, and a multi-node run started without its launcher would wait forever for the other nodes.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info


def sync_batchnorm_on_gpus_only(config: Any) -> None:
    """configs/trainer/ddp.yaml asks for SyncBatchNorm, which torch runs on GPUs only ("SyncBatchNorm layers only
    work with GPU modules", in every spawned process): on CPUs each process keeps its own BatchNorm statistics."""
    trainer = config.get("trainer") or {}
    accelerator = str(trainer.get("accelerator") or "auto")
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if trainer.get("sync_batchnorm") and on_cpu:
        trainer.sync_batchnorm = False
        rank_zero_info("trainer.sync_batchnorm=true needs GPUs: off on CPUs (each process normalises its own batch)")


# Variables a launcher (torchrun, SLURM, a cluster environment) sets: without them no other node will ever join.
LAUNCHED = ("WORLD_SIZE", "NODE_RANK", "SLURM_NTASKS", "MASTER_ADDR")


def trainer_refusal(trainer: Any) -> str | None:
    """What the trainer config asks of this machine that it lacks: said before anything is built or spawned."""
    accelerator = str(trainer.get("accelerator") or "auto")
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        return (
            f"trainer.accelerator={accelerator}: torch sees no CUDA GPU on this machine; use "
            "configs/trainer/cpu.yaml or trainer.accelerator=auto"
        )
    accumulate = trainer.get("accumulate_grad_batches")
    if isinstance(accumulate, int) and accumulate < 1:  # Lightning would divide by it at the first step
        return f"trainer.accumulate_grad_batches={accumulate}: give 1 (no accumulation) or more batches per step"
    nodes = trainer.get("num_nodes") or 1
    if nodes > 1 and not any(name in os.environ for name in LAUNCHED):
        return (
            f"trainer.num_nodes={nodes}: the other nodes join only through a launcher; start it with "
            "scripts/slurm.sbatch or scripts/torchrun_multinode.sh (or set trainer.num_nodes=1)"
        )
    return None
