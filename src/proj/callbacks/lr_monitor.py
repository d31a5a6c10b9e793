"""EveryStepLearningRateMonitor: the lr of every optimizer step for step schedules, at the cost of a float read.

Lightning's LearningRateMonitor logs a step schedule only on the steps whose values reach the loggers (every
`log_every_n_steps`): a 50-step warmup shows as 5 points and a cyclic schedule as noise. Calling the loggers at
every step would cost a logger call each (the per-step cost benchmarks/overhead.py measures); instead each step's
lr is read from its parameter group (a float) and kept, and the kept values go to the loggers, each at its own
step, when the other values do: on logged steps and at the end of each epoch (MLflow gets them in one batch).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import MLFlowLogger

from proj.compat import logs_this_step


class EveryStepLearningRateMonitor(LearningRateMonitor):
    """Lightning's LearningRateMonitor (same tags: `lr/<group>` for the template's schedulers), except that step
    schedules are logged at every optimizer step. Epoch schedules are logged at the first batch of each epoch."""

    def __init__(self, logging_interval: str | None = None, log_momentum: bool = False, log_weight_decay: bool = False):
        super().__init__(logging_interval, log_momentum, log_weight_decay)
        self.pending: dict[int, dict[str, float]] = {}
        self.last_step = -1
        self.watched: tuple[int, ...] = ()  # the scheduler configs the tags were found for (stages replace them)
        self.tags: dict[str, list[tuple[str, dict[str, Any]]]] = {"step": [], "epoch": []}

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if not trainer.is_global_zero:
            return
        # Epoch schedules at the epoch's first batch rather than in on_train_epoch_start, which runs before the
        # hooks that replace a schedule there (SWA's SWALR, a stage switch): the lr the epoch trains with.
        if batch_idx == 0 and self.logging_interval != "step" and (values := self.read(trainer, "epoch")):
            log_steps(trainer, {trainer.global_step: values})
        step = trainer.global_step
        if self.logging_interval != "epoch" and step != self.last_step:  # (under accumulation: once per step)
            self.last_step, self.pending[step] = step, self.read(trainer, "step")
        if logs_this_step(trainer):
            self.flush(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        self.flush(trainer)

    def on_train_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        self.flush(trainer)

    def flush(self, trainer: L.Trainer) -> None:
        rows = {step: row for step, row in self.pending.items() if row}
        self.pending = {}
        if rows:
            log_steps(trainer, rows)
            latest = rows[max(rows)]
            trainer.callback_metrics.update({k: torch.tensor(v) for k, v in latest.items()})

    def read(self, trainer: L.Trainer, interval: str) -> dict[str, float]:
        configs = trainer.lr_scheduler_configs
        key = (*map(id, configs), *(len(o.param_groups) for o in trainer.optimizers))
        if key != self.watched:
            self.watched, self.tags = key, self.find_tags(trainer)
        values = {}
        for tag, group in self.tags[interval]:
            values[tag] = group["lr"]
            if self.log_momentum:
                values[f"{tag}-momentum"] = group["betas"][0] if "betas" in group else group.get("momentum", 0.0)
            if self.log_weight_decay:
                values[f"{tag}-weight_decay"] = group.get("weight_decay", 0.0)
        return values

    def find_tags(self, trainer: L.Trainer) -> dict[str, list[tuple[str, dict[str, Any]]]]:
        """(tag, parameter group) pairs by interval, named as Lightning names them: the scheduler's name (or
        lr-<Optimizer>), then /<group name> when a group has one or there are several. An optimizer stepped by
        any step-interval scheduler is logged per step (its lr moves every step); one without a scheduler too,
        as Lightning does."""
        intervals: dict[int, tuple[str, Any]] = {}  # id(optimizer) -> (interval, name)
        for config in trainer.lr_scheduler_configs:
            optimizer = config.scheduler.optimizer
            interval = config.interval
            name = config.name or f"lr-{type(optimizer).__name__}"
            old = intervals.get(id(optimizer))
            intervals[id(optimizer)] = ("step" if "step" in (interval, old and old[0]) else "epoch", name)
        tags: dict[str, list[tuple[str, dict[str, Any]]]] = {"step": [], "epoch": []}
        seen: set[str] = set()
        for optimizer in trainer.optimizers:
            optimizer = getattr(optimizer, "optimizer", optimizer)  # DeepSpeed and others wrap the optimizer
            interval, name = intervals.get(id(optimizer), ("step", f"lr-{type(optimizer).__name__}"))
            interval = self.logging_interval or interval  # "step" or "epoch" given: every optimizer at it
            groups = optimizer.param_groups
            for i, group in enumerate(groups):
                label = group.get("name", f"pg{i + 1}") if len(groups) > 1 else group.get("name")
                tag = f"{name}/{label}" if label else name
                while tag in seen:  # two optimizers of one name (Lightning numbers them too)
                    tag += "-1"
                seen.add(tag)
                tags[interval].append((tag, group))
        return tags


def log_steps(trainer: L.Trainer, rows: Mapping[int, Mapping[str, float]]) -> None:
    """Values of several steps, each at its own step, in one write where the logger allows (MLflow's log_batch)."""
    for logger in trainer.loggers if trainer.is_global_zero else []:
        # MLflow pays a database write per call: one batch, where its keys need no prefix (the loggers extra's
        # MLFlowRunLogger says so in `prefix`; Lightning's own keeps it private, and gets a call per step).
        if isinstance(logger, MLFlowLogger) and getattr(logger, "prefix", None) == "":
            from mlflow.entities import Metric

            stamp = int(time.time() * 1000)
            metrics = [Metric(k, v, stamp, s) for s, row in rows.items() for k, v in row.items()]
            for i in range(0, len(metrics), 1000):  # MLflow's limit per batch
                logger.experiment.log_batch(logger.run_id, metrics=metrics[i : i + 1000])
        else:
            for step, row in rows.items():
                logger.log_metrics(dict(row), step=step)
