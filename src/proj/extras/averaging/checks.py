"""What each averaging callback checks before training: what it cannot average is refused in one line, a decay too
slow for the run is warned about."""

from __future__ import annotations

import itertools
import math
from typing import Any

import lightning.pytorch as L
from lightning.pytorch.callbacks import ModelPruning, StochasticWeightAveraging, WeightAveraging
from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy, ModelParallelStrategy
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from proj.optim.config import switches_modes

AVERAGING = (WeightAveraging, StochasticWeightAveraging)


def tensors(module: nn.Module) -> itertools.chain:
    return itertools.chain(module.parameters(), module.buffers())


def warn_if_too_slow(decay: float, updates: float) -> None:
    """An average whose decay spans much of the run still holds the first, untrained weights at its end: 0.99 on a
    160-step run (the scarce digits, benchmarks/recipes.py) kept a fifth of them and tested at chance."""
    if not math.isfinite(updates) or updates <= 0:
        return
    left = decay**updates  # the initial weights' share of the average after the run's last update
    if left > 0.01:
        rank_zero_warn(
            f"EMA decay={decay}: after this run's {updates:.0f} updates the initial weights still make up "
            f"{left:.0%} of the average; lower the decay (e.g. {1 - 10 / updates:.4f}: about the last tenth of the run)"
        )


def check_same_layers(average: nn.Module, pl_module: nn.Module, name: str) -> None:
    """The average was copied from the model at setup: layers made later (in configure_model) would be missing."""
    if [t.shape for t in tensors(average)] != [t.shape for t in tensors(pl_module)]:
        raise ValueError(
            f"{name}: the model's layers changed after setup (built in configure_model?), so the average copied "
            "at setup does not match them. Build the layers in __init__, or drop the averaging callback"
        )


def refuse_alongside(trainer: L.Trainer, callback: Any, name: str) -> None:
    """One averaging callback at a time (each puts its average in the checkpoint), no pruning, and no sharded model
    (each keeps a full copy of it and swaps weights in place)."""
    others = [type(c).__name__ for c in trainer.callbacks if isinstance(c, AVERAGING) and c is not callback]
    if others:
        raise ValueError(
            f"{name} and {', '.join(others)} are both in trainer.callbacks: use one of configs/callbacks/ema.yaml, "
            "swa.yaml and avg_checkpoints.yaml"
        )
    if any(isinstance(c, ModelPruning) for c in trainer.callbacks):  # all three crashed: a size mismatch, once pruned
        raise ValueError(
            f"{name} averages weights that pruning (configs/callbacks/pruning.yaml) re-parametrises and zeroes epoch "
            "by epoch: the average would have other layers and no zeros. Use one of the two"
        )
    if isinstance(trainer.strategy, (FSDPStrategy, DeepSpeedStrategy, ModelParallelStrategy)):
        raise ValueError(
            f"{name} keeps a full copy of the model and swaps weights in place, which a sharded model "
            f"(trainer.strategy {type(trainer.strategy).__name__}) does not allow: use the ddp strategy "
            "(configs/trainer/ddp.yaml), or leave the averaging callback out"
        )


def refuse_schedule_free(pl_module: L.LightningModule, name: str) -> None:
    """A schedule-free optimizer (train() / eval() modes) averages its iterates itself and puts that average in the
    weights for validation and checkpoints: a second average would fight over the same weights."""
    for stage in getattr(pl_module, "stages", []):
        cls = stage.optimizer.cls
        if switches_modes(cls):
            raise ValueError(
                f"{name}: model.init_args.{stage.optimizer.where} {cls.__name__} is schedule-free: it averages its "
                "weights by itself. Use it without configs/callbacks/ema.yaml, swa.yaml or avg_checkpoints.yaml, or "
                "choose another optimizer"
            )


def refuse_stages(pl_module: L.LightningModule) -> None:
    """SWA replaces the one optimizer's schedule by SWALR; a stage switch would build a new optimizer without it."""
    stages = getattr(pl_module, "stages", [])
    if len(stages) > 1:
        plan = ", then ".join(f"{s.optimizer.cls.__name__} from epoch {s.start_epoch}" for s in stages)
        raise ValueError(
            f"SWA needs one optimizer stage, but model.init_args.optim.stages has {len(stages)} ({plan}; e.g. "
            "configs/optim/adam_then_sgd.yaml): the switch would drop SWA's schedule. Keep one stage, or average "
            "with configs/callbacks/ema.yaml instead"
        )


def refuse_two_schedulers(trainer: L.Trainer, pl_module: L.LightningModule) -> None:
    """Lightning's SWA swaps the stage's one scheduler for SWALR. The warmup is inside it, except with
    ReduceLROnPlateau or an epoch schedule over data of unknown length (proj.optim.schedulers.build_schedulers)."""
    if len(trainer.lr_scheduler_configs) <= 1:
        return
    stage = getattr(pl_module, "stages", [None])[0]
    where = f"model.init_args.{stage.where}" if stage is not None else "the model's configure_optimizers"
    names = " and ".join(type(c.scheduler).__name__ for c in trainer.lr_scheduler_configs)
    raise ValueError(
        f"SWA replaces the one lr scheduler with SWALR, but {where} has two ({names}: a warmup that cannot be "
        f"composed with ReduceLROnPlateau or with an epoch schedule over data of unknown length). Set "
        f"{where}.warmup_steps: 0, or average with configs/callbacks/ema.yaml instead"
    )
