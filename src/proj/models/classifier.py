"""A generic image / tabular classifier: any net from `proj.nets` (or yours), cross-entropy, torchmetrics."""

from collections.abc import Callable, Sequence
from dataclasses import asdict, is_dataclass
from functools import partial
from typing import Any

import lightning.pytorch as L
import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from proj.optim import (
    OptimConfig,
    check_resumed_horizons,
    configure_stage,
    horizons,
    import_class,
    l1_penalty,
    parse_stages,
    stage_at,
)
from proj.views import logs_this_step

# A net is built by the model from facts of the data: `net(input_shape, num_classes)`. In YAML it is a
# class_path whose other init_args are given there (e.g. proj.nets.SmallCNN with widths, dropout).
NetFactory = Callable[[tuple[int, ...], int], nn.Module]


def classification_metrics(num_classes: int, prefix: str, auroc_thresholds: int | None) -> MetricCollection:
    """Accuracy, macro precision / recall / F1 and macro one-vs-rest ROC-AUC.

    validate_args=False: torchmetrics would otherwise check every batch's values (labels in range,
    probabilities in [0, 1]), which on a GPU makes the host wait for the device at every update; the loss,
    computed on the same batch, already fails on a label out of range."""
    checks = {"validate_args": False}
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro", **checks),
            "precision": MulticlassPrecision(num_classes, average="macro", **checks),
            "recall": MulticlassRecall(num_classes, average="macro", **checks),
            "f1": MulticlassF1Score(num_classes, average="macro", **checks),
            "auroc": MulticlassAUROC(num_classes, average="macro", thresholds=auroc_thresholds, **checks),
        },
        prefix=prefix,
    )


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
    if is_dataclass(hparams.get("optim")):
        hparams["optim"] = asdict(hparams["optim"])


def batch_weighted(loss: Tensor, batch_size: int) -> Tensor:
    """A batch's mean loss repeated once per sample (a view, no copy), so that a MeanMetric weighs each batch
    by its size: torchmetrics 1.9 drops the `weight` argument under nan_strategy="disable"."""
    return loss.expand(batch_size)


class Classifier(L.LightningModule):
    """Classifies inputs into `num_classes`; `num_classes` and `input_shape` are linked from the data."""

    def __init__(
        self,
        net: NetFactory | dict,
        num_classes: int,
        input_shape: Sequence[int],
        optim: OptimConfig | dict | None = None,
        label_smoothing: float = 0.0,
        loss_weights: list[float] | None = None,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        """channels_last: keep conv weights and image batches in NHWC, the layout tensor cores read fastest
        (GPU, with bf16 / fp16). compile: torch.compile the net in place (checkpoint keys unchanged); the
        first steps pay the compilation."""
        super().__init__()
        if isinstance(net, dict):  # {class_path, init_args}: as saved in a checkpoint's hyper-parameters
            net = partial(import_class(net["class_path"], "model.net.class_path"), **net.get("init_args", {}))
        if isinstance(optim, dict):
            optim = OptimConfig(**optim)
        self.save_hyperparameters()
        plain_hparams(self.hparams)
        self.net = net(tuple(input_shape), num_classes)
        self.optim = optim or OptimConfig()
        self.stages = parse_stages(self.optim)  # a bad optim config fails here, before any training
        self.stage = 0  # the stage whose optimizer is live; saved in checkpoints
        self.built_stage: int | None = None
        self.planned_horizons: dict = {}
        # One weight per class for the cross-entropy; the CLI links it from data.class_weights.
        weight = torch.tensor(loss_weights, dtype=torch.float) if loss_weights else None
        if weight is not None and len(weight) != num_classes:
            raise ValueError(f"model.loss_weights has {len(weight)} values for {num_classes} classes")
        self.loss_fn = nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)
        # Training AUROC is binned so its memory stays constant however long the epoch.
        self.train_metrics = classification_metrics(num_classes, "train/", auroc_thresholds=100)
        self.val_metrics = classification_metrics(num_classes, "val/", auroc_thresholds=None)
        self.test_metrics = classification_metrics(num_classes, "test/", auroc_thresholds=None)
        # Each stage's mean loss over the epoch, weighted by batch size and gathered from every rank under DDP.
        # NaN is kept (nan_strategy "disable"): it must show, and checking for it would make the host wait
        # for the device at every batch.
        self.train_loss, self.val_loss, self.test_loss = (MeanMetric(nan_strategy="disable") for _ in range(3))

    def forward(self, x: Tensor) -> Tensor:
        if self.hparams.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def configure_model(self) -> None:
        """Runs on the training device before the optimizers are made: memory layout, compilation, and
        FSDP2 (configs/trainer/fsdp2.yaml): shard each block of the net's body, then the net, over the
        data-parallel mesh that ModelParallelStrategy provides. Other strategies have no mesh."""
        if getattr(self, "configured", False):
            return
        self.configured = True
        if self.hparams.channels_last:
            self.net.to(memory_format=torch.channels_last)
        mesh = self.device_mesh
        if mesh is not None:
            self.shard(mesh)
        if self.hparams.compile:
            self.net.compile()  # in place: the state_dict keys stay those of the plain net

    def shard(self, mesh: Any) -> None:
        from torch.distributed.fsdp import fully_shard

        for block in getattr(self.net, "body", []):
            fully_shard(block, mesh=mesh["data_parallel"])
        fully_shard(self.net, mesh=mesh["data_parallel"])

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch  # y: class indices, or class probabilities after MixUp / CutMix (the loss takes both)
        logits = self(x)
        loss = self.loss_fn(logits, y)
        # The step's loss goes to `self.log` only when it reaches the logs (every log_every_n_steps): a call
        # costs Lightning 0.2 ms, 2.5% of a digits step. The epoch mean counts every batch, weighted by size.
        self.train_loss.update(batch_weighted(loss.detach(), len(y)))
        if logs_this_step(self._trainer):
            self.log("train/loss_step", loss, prog_bar=True)
        if self.optim.l1:
            loss = loss + l1_penalty(self.net, self.optim)
        # Training metrics are estimated on every log_every_n_steps-th batch of the epoch (0, 10, 20, ... by
        # default): updating five metrics costs 0.75 ms, 8% of a digits step; log_every_n_steps=1 takes all.
        if batch_idx % getattr(self._trainer, "log_every_n_steps", 1) == 0:  # (no trainer: called directly)
            self.train_metrics.update(logits.softmax(-1), y.argmax(-1) if y.is_floating_point() else y)
        return loss

    def on_train_epoch_end(self) -> None:
        self.log_epoch("train/loss_epoch", self.train_loss, self.train_metrics)

    def log_epoch(self, loss_name: str, loss: MeanMetric, metrics: MetricCollection) -> None:
        """Log an epoch's mean loss and metrics once, at its end, then start afresh.

        Each `self.log` call costs Lightning 0.3 to 0.5 ms, and handing it the Metric objects at every step
        cost about 2 ms a digits step (a device move of each per call). `compute` gathers the states from
        every rank under DDP, so every rank logs (and early-stops on) the same value.
        """
        if loss.update_called:  # an epoch without batches (resumed at its end) has nothing to log
            self.log(loss_name, loss.compute(), prog_bar=not loss_name.startswith("test/"))
            self.log_dict(metrics.compute())
        loss.reset()
        metrics.reset()

    def evaluate(self, batch: tuple[Tensor, Tensor], loss: MeanMetric, metrics: MetricCollection) -> dict[str, Tensor]:
        x, y = batch
        logits = self(x)
        loss.update(batch_weighted(self.loss_fn(logits, y), len(y)))
        probs = logits.softmax(-1)
        metrics.update(probs, y)
        return {"probs": probs.detach(), "target": y}  # for callbacks (the confusion matrix view)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return self.evaluate(batch, self.val_loss, self.val_metrics)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return self.evaluate(batch, self.test_loss, self.test_metrics)

    def on_validation_epoch_end(self) -> None:
        self.log_epoch("val/loss", self.val_loss, self.val_metrics)

    def on_test_epoch_end(self) -> None:
        self.log_epoch("test/loss", self.test_loss, self.test_metrics)

    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        """Class probabilities for each input."""
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(x).softmax(-1)

    # --- optimisation: stages of optimizer + schedule, see proj/optim.py ---------------------------------

    def configure_optimizers(self) -> Any:
        self.built_stage = self.stage
        optimizers, schedulers = configure_stage(self, self.optim, self.stages, self.stage)
        self.planned_horizons = horizons([c["scheduler"] for c in schedulers])
        return optimizers, schedulers

    def on_train_start(self) -> None:
        # After a resume the schedulers hold their saved state: say so if their horizon differs from the plan.
        check_resumed_horizons(
            self.planned_horizons, horizons([c.scheduler for c in self.trainer.lr_scheduler_configs])
        )

    def on_train_epoch_start(self) -> None:
        wanted = stage_at(self.stages, self.current_epoch)
        if wanted != self.stage:  # multi-stage: a new optimizer and schedule from this epoch on
            self.stage = wanted
            self.trainer.strategy.setup_optimizers(self.trainer)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["optim_stage"] = self.stage

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # On resume configure_optimizers may run before the epoch counter is restored, so the stage
        # travels in the checkpoint; rebuild if the optimizers were already made for another stage.
        self.stage = checkpoint.get("optim_stage", 0)
        if self.built_stage is not None and self.built_stage != self.stage:
            self.trainer.strategy.setup_optimizers(self.trainer)
