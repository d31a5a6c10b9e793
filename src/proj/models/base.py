"""The training core every task module subclasses: one place for everything that is not the task.

`TaskModule` builds the net from facts of the data, holds the `optim` config and its configure_optimizers
(multi-stage switching, the stage in checkpoints, horizon warnings on resume), the memory-layout /
compile / FSDP2 hooks, and the epoch losses and metrics, logged once per epoch. A task module (Classifier,
Regressor, yours) says only:

- `compute_loss(outputs, target)`: the training loss of a batch;
- `make_metrics(split)`: a torchmetrics MetricCollection for "train", "val" or "test";
- `update_metrics(metrics, outputs, target)`: feed them, and return what callbacks see of the batch;
- `predictions(outputs)`: what `predict` returns (probabilities, values in the target's units, ...);
- `prediction_columns()` / `prediction_rows(predictions)`: how predictions.csv spells them.

Every batch is read through `unpack_batch` (proj.models.batches): tuples, or dicts with the keys of `batch_keys`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, is_dataclass
from functools import partial
from typing import Any

import lightning.pytorch as L
import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric, MetricCollection

from proj.compat import logs_this_step
from proj.models.batches import Batch, BatchKeys, Padded, check_input_shape, labelled, unpack
from proj.models.epoch_states import epoch_states, restore_epoch_states
from proj.models.schedule_free_modes import ScheduleFreeModes
from proj.models.targets import check_checkpoint_targets, check_task
from proj.nets.checkpointing import NO_BLOCKS, body_blocks, body_parts, checkpoint_blocks
from proj.optim import (
    OptimConfig,
    TrainerFacts,
    check_resumed_horizons,
    configure_stage,
    horizons,
    import_class,
    l1_penalty,
    parse_stages,
    stage_at,
)

# A net is built by the model from facts of the data: `net(input_shape, num_outputs)`. In YAML it is a
# class_path whose other init_args are given there (e.g. proj.nets.SmallCNN with widths, dropout).
NetFactory = Callable[[tuple[int, ...], int], nn.Module]
SPLITS = ("train", "val", "test")


class TaskModule(ScheduleFreeModes, L.LightningModule):
    """The shared core. `num_outputs`, `input_shape` and `targets` are linked from the data by the CLI.

    targets: what the data says of its targets (`data.targets`, proj.data.contract): the task, and class names and loss
        weights (classification) or target names and the training split's mean and std (regression).

    channels_last: keep conv weights and image batches in NHWC, the layout tensor cores read fastest (GPU,
    with bf16 / fp16). compile: torch.compile the net in place (checkpoint keys unchanged); the first steps
    pay the compilation. activation_checkpointing: recompute each block of the net's body in the backward pass
    instead of keeping its activations (proj.nets.checkpointing): less memory, more time (benchmarks/README.md).
    batch_keys: the keys of dict batches (input, target, id); tuple batches need none (proj.models.batches).
    """

    task = "custom"  # what the task-aware callbacks and tools look at: classification, regression, ...
    headline_metrics: tuple[str, ...] = ()  # the metrics HParams compares runs by, besides the loss

    def __init__(
        self,
        net: NetFactory | dict,
        num_outputs: int,
        input_shape: Sequence[int],
        targets: dict[str, Any] | None = None,
        optim: OptimConfig | dict | None = None,
        channels_last: bool = False,
        compile: bool = False,
        activation_checkpointing: bool = False,
        batch_keys: BatchKeys | None = None,
    ) -> None:
        super().__init__()
        self.targets = dict(targets or {})
        self.batch_keys = BatchKeys(**batch_keys) if isinstance(batch_keys, dict) else batch_keys or BatchKeys()
        check_task(type(self), self.task, self.targets.get("task"))
        if isinstance(net, dict):  # {class_path, init_args}: as saved in a checkpoint's hyper-parameters
            net = partial(import_class(net["class_path"], "model.net.class_path"), **net.get("init_args", {}))
        if isinstance(optim, dict):
            optim = OptimConfig(**optim)
        self.save_hyperparameters()  # the subclass's arguments too: Lightning collects every __init__ frame
        plain_hparams(self.hparams)
        self.num_outputs = num_outputs
        self.net = net(tuple(input_shape), num_outputs)
        if activation_checkpointing and not body_blocks(self.net):  # refused before anything is trained
            raise ValueError(f"model.init_args.activation_checkpointing: {NO_BLOCKS.format(type(self.net).__name__)}")
        self.optim = optim or OptimConfig()
        self.stages = parse_stages(self.optim)  # a bad optim config fails here, before any training
        self.stage = 0  # the stage whose optimizer is live; saved in checkpoints
        self.built_stage: int | None = None
        self.planned_horizons: dict = {}
        self.inputs_checked, self.saved_epoch_states = False, None  # the first batch's shape; a resume's metrics
        # Each split's mean loss over the epoch, weighted by batch size and gathered from every rank under DDP.
        # NaN is kept (nan_strategy "disable"): it must show, and checking for it would make the host wait
        # for the device at every batch.
        self.train_loss, self.val_loss, self.test_loss = (MeanMetric(nan_strategy="disable") for _ in SPLITS)
        self.train_metrics, self.val_metrics, self.test_metrics = (self.make_metrics(split) for split in SPLITS)

    # --- what a task says ------------------------------------------------------------------------------

    def compute_loss(self, outputs: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError

    def make_metrics(self, split: str) -> MetricCollection:
        return MetricCollection({}, prefix=f"{split}/")

    def update_metrics(self, metrics: MetricCollection, outputs: Tensor, target: Tensor) -> dict[str, Tensor]:
        metrics.update(outputs, target)
        return {"outputs": outputs.detach(), "target": target}

    def predictions(self, outputs: Tensor) -> Tensor:
        return outputs

    def prediction_columns(self) -> list[str]:
        return [f"output_{i}" for i in range(self.num_outputs)]

    def prediction_rows(self, predictions: Tensor) -> list[list[str]]:
        values = predictions.float().cpu().reshape(len(predictions), -1)
        return [[f"{v:.6g}" for v in row] for row in values.tolist()]

    # --- the loop ---------------------------------------------------------------------------------------

    def unpack_batch(self, batch: Any) -> Batch:
        """How a batch becomes (inputs, target, ids): the one hook every step and callback reads batches through.
        Override it for batches of a shape of your own."""
        return unpack(batch, self.batch_keys)

    def forward(self, x: Tensor) -> Tensor:
        if not self.inputs_checked:  # the first batch: its shape against the data's input_shape, once
            check_input_shape(x, self.hparams.input_shape)
            self.inputs_checked = True
        if self.hparams.channels_last and isinstance(x, Tensor) and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(*x) if isinstance(x, Padded) else self.net(x)  # sequences: net(values, lengths, mask)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y, _ = self.unpack_batch(batch)
        y = labelled(y, "training")
        outputs = self(x)
        loss = self.compute_loss(outputs, y)
        # The step's loss goes to `self.log` only when it reaches the logs (every log_every_n_steps): each call
        # costs Lightning a share of a small step (benchmarks/overhead.py). The epoch mean counts every batch.
        self.train_loss.update(batch_weighted(loss.detach(), len(y)))
        if logs_this_step(self._trainer):
            self.log("train/loss_step", loss, prog_bar=True)
        if self.optim.l1:
            loss = loss + l1_penalty(self.net, self.optim)
        # Training metrics are estimated on every log_every_n_steps-th batch of the epoch (0, 10, 20, ... by
        # default): updating five metrics at every batch costs a small step a share of its time
        # (benchmarks/overhead.py); log_every_n_steps=1 takes all.
        if batch_idx % getattr(self._trainer, "log_every_n_steps", 1) == 0:  # (no trainer: called directly)
            self.update_metrics(self.train_metrics, outputs.detach(), y)
        return loss

    def evaluate(self, batch: Any, loss: MeanMetric, metrics: MetricCollection) -> dict[str, Tensor]:
        x, y, _ = self.unpack_batch(batch)
        y = labelled(y, "validation or test")
        outputs = self(x)
        loss.update(batch_weighted(self.compute_loss(outputs, y), len(y)))
        return self.update_metrics(metrics, outputs, y)  # for callbacks (confusion matrix, scatter)

    def validation_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        return self.evaluate(batch, self.val_loss, self.val_metrics)

    def test_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        return self.evaluate(batch, self.test_loss, self.test_metrics)

    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self.predictions(self(self.unpack_batch(batch).inputs))

    def on_train_epoch_end(self) -> None:
        self.log_epoch("train/loss_epoch", self.train_loss, self.train_metrics)

    def on_validation_epoch_end(self) -> None:
        self.log_epoch("val/loss", self.val_loss, self.val_metrics)

    def on_test_epoch_end(self) -> None:
        self.log_epoch("test/loss", self.test_loss, self.test_metrics)

    def log_epoch(self, loss_name: str, loss: MeanMetric, metrics: MetricCollection) -> None:
        """Log an epoch's mean loss and metrics once, at its end, then start afresh.

        Each `self.log` call costs Lightning time, and handing it the Metric objects at every step costs a device
        move of each per call (benchmarks/overhead.py measures the template's step against plain Lightning's).
        `compute` gathers the states from every rank under DDP, so every rank logs (and early-stops on) the same
        value.
        """
        if loss.update_called:  # an epoch without batches (resumed at its end) has nothing to log
            self.log(loss_name, loss.compute(), prog_bar=not loss_name.startswith("test/"))
            if metrics:
                self.log_dict(metrics.compute())
        loss.reset()
        metrics.reset()

    # --- devices: memory layout, compilation, FSDP2 -----------------------------------------------------

    def configure_model(self) -> None:
        """Runs on the training device before the optimizers are made: memory layout, activation checkpointing
        (inside the shards), FSDP2 (configs/trainer/fsdp2.yaml): shard each block of the net's body, then the net,
        over the data-parallel mesh that ModelParallelStrategy provides (other strategies have none), compilation."""
        if getattr(self, "configured", False):
            return
        self.configured = True
        if self.hparams.channels_last:
            self.net.to(memory_format=torch.channels_last)
        if self.hparams.get("activation_checkpointing"):
            checkpoint_blocks(self.net)
        mesh = self.device_mesh
        if mesh is not None:
            self.shard(mesh)
        if self.hparams.compile:
            self.net.compile()  # in place: the state_dict keys stay those of the plain net

    def shard(self, mesh: Any) -> None:
        from torch.distributed.fsdp import fully_shard  # only under FSDP2: it imports torch.distributed.tensor

        for block in body_parts(self.net):
            fully_shard(block, mesh=mesh["data_parallel"])
        fully_shard(self.net, mesh=mesh["data_parallel"])

    # --- optimisation: stages of optimizer + schedule, see proj/optim/ ----------------------------------

    def configure_optimizers(self) -> Any:
        self.built_stage = self.stage
        optimizers, schedulers = configure_stage(self, self.optim, self.stages, self.stage, TrainerFacts(self.trainer))
        self.planned_horizons = horizons([c["scheduler"] for c in schedulers])
        return optimizers, schedulers

    def on_train_start(self) -> None:
        # Resumed mid-epoch (Lightning then calls no on_train_epoch_start for that epoch): its metrics so far.
        restore_epoch_states(self.train_epoch_metrics(), self.saved_epoch_states, self.current_epoch)
        # After a resume the schedulers hold their saved state: say so if their horizon differs from the plan.
        check_resumed_horizons(
            self.planned_horizons, horizons([c.scheduler for c in self.trainer.lr_scheduler_configs])
        )

    def on_train_epoch_start(self) -> None:
        wanted = stage_at(self.stages, self.current_epoch)
        if wanted != self.stage:  # multi-stage: a new optimizer and schedule from this epoch on
            self.set_optimizer_mode("eval")  # the next stage starts from a Schedule-Free stage's averaged weights
            self.stage = wanted
            self.trainer.strategy.setup_optimizers(self.trainer)

    def train_epoch_metrics(self) -> dict[str, Any]:
        return {"loss": self.train_loss, **dict(self.train_metrics.items(keep_base=True, copy_state=False))}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["optim_stage"] = self.stage
        if self._trainer is not None:  # the running epoch's metrics (proj.models.epoch_states)
            checkpoint["train_epoch_states"] = epoch_states(self.train_epoch_metrics(), self.current_epoch)
        super().on_save_checkpoint(checkpoint)  # a Schedule-Free optimizer's averaged weights (ScheduleFreeModes)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Before the weights are loaded (Lightning restores them after this hook): a checkpoint of other classes
        # stops here with both lists, not later with a state_dict size mismatch, or never, with swapped labels.
        self.check_targets(checkpoint, getattr(self._trainer, "ckpt_path", None))
        # On resume configure_optimizers may run before the epoch counter is restored, so the stage
        # travels in the checkpoint; rebuild if the optimizers were already made for another stage.
        self.stage = checkpoint.get("optim_stage", 0)
        self.saved_epoch_states = checkpoint.get("train_epoch_states")
        super().on_load_checkpoint(checkpoint)  # a Schedule-Free run's training weights (ScheduleFreeModes)
        if self.built_stage is not None and self.built_stage != self.stage:
            self.trainer.strategy.setup_optimizers(self.trainer)

    def check_targets(self, checkpoint: dict[str, Any], path: str | None = None) -> None:
        """The targets this model was built for (linked from the data) must be the checkpoint's (same classes in
        the same order, or target names, and as many outputs); a checkpoint's names fill in what the data lacks."""
        check_checkpoint_targets(self.targets, self.num_outputs, checkpoint, path)


def plain_hparams(hparams: dict[str, Any]) -> None:
    """Keep only plain values in the hyper-parameters, so checkpoints load with torch's weights-only loader.

    Through the CLI they already are (the config as written); a model built in Python passes a class and
    an OptimConfig, which are stored as {class_path, init_args} and a dict instead.
    """
    net = hparams.get("net")
    if isinstance(net, partial) and isinstance(net.func, type) and not net.args:
        net, kwargs = net.func, dict(net.keywords)
    else:
        kwargs = {}
    if isinstance(net, type):
        hparams["net"] = {"class_path": f"{net.__module__}.{net.__qualname__}", "init_args": kwargs}
    for name in ("optim", "batch_keys"):
        if is_dataclass(hparams.get(name)):
            hparams[name] = asdict(hparams[name])


def batch_weighted(loss: Tensor, batch_size: int) -> Tensor:
    """A batch's mean loss repeated once per sample (a view, no copy), so that a MeanMetric weighs each batch
    by its size: torchmetrics 1.9 drops the `weight` argument under nan_strategy="disable"."""
    return loss.expand(batch_size)
