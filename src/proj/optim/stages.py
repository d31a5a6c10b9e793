"""Multi-stage training: which stage trains an epoch, and what `configure_optimizers` returns for a stage.

The trainer is read here and nowhere else in `proj.optim` (`TrainerFacts`): the parts below it are functions of
numbers. Switching stage at an epoch and saving the stage in checkpoints is the model's part
(`proj.models.base.TaskModule`), because Lightning owns the optimizers once they are built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import nn
from torch.optim import LBFGS
from torch.optim.lr_scheduler import ReduceLROnPlateau

from proj.optim.config import OptimConfig, Stage
from proj.optim.groups import build_optimizer
from proj.optim.schedulers import build_schedulers, stage_length

if TYPE_CHECKING:
    import lightning.pytorch as L

AMP_PRECISIONS = ("16-mixed", "bf16-mixed", "16", "bf16", 16)


@dataclass
class TrainerFacts:
    """What the optimisation needs to know about the run, read once from the trainer."""

    trainer: L.Trainer

    @property
    def precision(self) -> Any:
        return self.trainer.precision

    @property
    def mixed_precision(self) -> bool:
        return self.trainer.precision in AMP_PRECISIONS

    @property
    def max_epochs(self) -> int | None:
        value = self.trainer.max_epochs
        return value if value is not None and value >= 0 else None

    @property
    def max_steps(self) -> int | None:
        value = self.trainer.max_steps
        return value if value is not None and value > 0 else None

    def steps_per_epoch(self) -> int | None:
        """Optimizer steps per epoch: batches (after limit_train_batches) over accumulate_grad_batches."""
        t = self.trainer
        if t.train_dataloader is None:
            t.fit_loop.setup_data()  # what trainer.estimated_stepping_batches does too
        if t.num_training_batches in (float("inf"), -1):
            return None
        # Lightning steps on the last, partial accumulation window of an epoch too: hence the ceiling.
        return math.ceil(t.num_training_batches / t.accumulate_grad_batches)


def stage_at(stages: list[Stage], epoch: int) -> int:
    """Index of the stage that trains `epoch`."""
    return max(i for i, s in enumerate(stages) if s.start_epoch <= epoch)


def check_stage_fits_run(stage: Stage, facts: TrainerFacts) -> None:
    """The checks that need the trainer: precision and accumulation with L-BFGS, validation cadence, clipping with a
    fused kernel."""
    trainer = facts.trainer
    cls = stage.optimizer.cls
    # L-BFGS and SAM (proj.extras.optim_extras: `reevaluates_closure`) run the training step more than once per
    # optimizer step, through Lightning's closure.
    if issubclass(cls, LBFGS) or getattr(cls, "reevaluates_closure", False):
        name = "torch.optim.LBFGS" if issubclass(cls, LBFGS) else f"{cls.__module__}.{cls.__name__}"
        if facts.mixed_precision:
            raise ValueError(
                f"{stage.optimizer.where}: {name} does not work with trainer.precision="
                f"{facts.precision!r} (mixed precision cannot scale its closure); use precision 32-true"
            )
        if trainer.accumulate_grad_batches > 1:
            # Lightning skips zero_grad on the stepping batch of a window, so each closure evaluation within the
            # step would add its gradient onto the previous one's.
            raise ValueError(
                f"{stage.optimizer.where}: {name} re-evaluates its closure within one step, which gradient "
                f"accumulation (trainer.accumulate_grad_batches={trainer.accumulate_grad_batches}) would sum onto "
                "stale gradients: set accumulate_grad_batches to 1 (and raise data.batch_size instead)"
            )
    for spec in stage.schedulers:
        monitor = spec.init_args.get("monitor", "")
        if (
            issubclass(spec.cls, ReduceLROnPlateau)
            and monitor.startswith("val/")
            and trainer.check_val_every_n_epoch != 1
        ):
            raise ValueError(
                f"{spec.where}.init_args.monitor={monitor!r} exists only after validation, but "
                f"trainer.check_val_every_n_epoch={trainer.check_val_every_n_epoch}: set it to 1"
            )
    # Under mixed precision a fused optimizer unscales the gradients inside its own step: Lightning then refuses
    # to clip them (even under bf16, which has no scaler), and hooks before the step would see them scaled
    # (the logged gradient norm). So the fused kernel is a default only at full or plain half precision.
    if facts.mixed_precision and trainer.gradient_clip_val and stage.optimizer.init_args.get("fused"):
        raise ValueError(
            f"{stage.optimizer.where}.init_args.fused=true cannot be combined with trainer.precision="
            f"{facts.precision!r} and trainer.gradient_clip_val={trainer.gradient_clip_val}: Lightning does not "
            "clip the gradients of a fused optimizer under mixed precision. Remove fused (or set it to false), "
            "or turn clipping off"
        )


def configure_stage(model: nn.Module, config: OptimConfig, stages: list[Stage], index: int, facts: TrainerFacts) -> Any:
    """What `configure_optimizers` returns for stage `index`: the optimizer and its scheduler configs."""
    stage = stages[index]
    check_stage_fits_run(stage, facts)
    optimizer = build_optimizer(model, config, stage, facts.trainer.world_size, fused=not facts.mixed_precision)
    starts = [s.start_epoch for s in stages]

    def length(where: str) -> int:
        unit = stage.interval or "step"
        return stage_length(starts, index, unit, facts.max_epochs, facts.max_steps, facts.steps_per_epoch, where)

    return [optimizer], build_schedulers(optimizer, stage, length, facts.steps_per_epoch)
