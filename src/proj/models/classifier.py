"""A classifier: cross-entropy (label smoothing, class weights), accuracy / precision / recall / F1 / ROC-AUC."""

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn
from torchmetrics import ClasswiseWrapper, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from proj.models.base import NetFactory, TaskModule
from proj.models.batches import BatchKeys
from proj.models.targets import output_names, output_weights
from proj.optim import OptimConfig


class Classifier(TaskModule):
    """Classifies inputs into `num_outputs` classes; `num_outputs`, `input_shape` and `targets` (class names,
    and loss weights from data.class_weights) are linked from the data."""

    task = "classification"
    headline_metrics = ("acc",)

    def __init__(
        self,
        net: NetFactory | dict,
        num_outputs: int,
        input_shape: Sequence[int],
        targets: dict[str, Any] | None = None,
        optim: OptimConfig | dict | None = None,
        label_smoothing: float = 0.0,
        channels_last: bool = False,
        compile: bool = False,
        activation_checkpointing: bool = False,
        batch_keys: BatchKeys | None = None,
    ) -> None:
        super().__init__(
            net, num_outputs, input_shape, targets, optim, channels_last, compile, activation_checkpointing, batch_keys
        )
        weight = output_weights(self.targets, num_outputs, "class_weights", "classes")
        self.loss_fn = nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)

    @property
    def class_names(self) -> list[str]:
        """The names of the classes in output order: the data's, which a loaded checkpoint's must equal."""
        return output_names(self.targets, self.num_outputs)

    def compute_loss(self, outputs: Tensor, target: Tensor) -> Tensor:
        return self.loss_fn(outputs, target)  # target: class indices, or probabilities after MixUp / CutMix

    def make_metrics(self, split: str) -> MetricCollection:
        """Accuracy, macro precision / recall / F1 and macro one-vs-rest ROC-AUC (binned for training, so its
        memory stays constant however long the epoch), and each class's F1 on validation and test.

        validate_args=False: torchmetrics would otherwise check every batch's values (labels in range,
        probabilities in [0, 1]), which on a GPU makes the host wait for the device at every update; the loss,
        computed on the same batch, already fails on a label out of range."""
        n, checks = self.num_outputs, {"validate_args": False}
        metrics = {
            "acc": MulticlassAccuracy(n, average="micro", **checks),
            "precision": MulticlassPrecision(n, average="macro", **checks),
            "recall": MulticlassRecall(n, average="macro", **checks),
            "f1": MulticlassF1Score(n, average="macro", **checks),
            "auroc": MulticlassAUROC(n, average="macro", thresholds=100 if split == "train" else None, **checks),
        }
        if split != "train":  # each class's F1 (val/f1_<class>): which classes a model gets wrong, epoch by epoch
            metrics["class_f1"] = ClasswiseWrapper(
                MulticlassF1Score(n, average=None, **checks), self.class_names, "f1_"
            )
        return MetricCollection(metrics, prefix=f"{split}/")

    def update_metrics(self, metrics: MetricCollection, outputs: Tensor, target: Tensor) -> dict[str, Tensor]:
        probs = outputs.softmax(-1)
        metrics.update(probs, target.argmax(-1) if target.is_floating_point() else target)  # soft: mixed
        return {"probs": probs.detach(), "target": target}

    def predictions(self, outputs: Tensor) -> Tensor:
        return outputs.softmax(-1)

    def prediction_columns(self) -> list[str]:
        return ["predicted", *(f"p_{name}" for name in self.class_names)]

    def prediction_rows(self, predictions: Tensor) -> list[list[str]]:
        probabilities = predictions.float().cpu()
        return [[self.class_names[int(p.argmax())], *(f"{v:.6g}" for v in p.tolist())] for p in probabilities]
