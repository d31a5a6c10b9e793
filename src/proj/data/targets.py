"""What a DataModule's task says about its targets: classes or values, and what the model is told of them.

classification: y holds class indices (int64); `classes` names them, `num_outputs` counts them, and the
    class-based options (a resampling sampler, class weights, MixUp / CutMix) are available.
regression: y holds float32 values, (N,) for one target or (N, k) for k; batches carry them raw and
    `target_stats` gives the training split's mean and std per column (saved with the run in `stats`), for the
    model to standardise with. The class-based options are refused with the setting to change.
multilabel: y holds multi-hot rows (N, k) of 0 / 1, one column per label (`classes` names the labels, `num_classes`
    counts them), kept as float32 so that MixUp / CutMix can mix them. class_weights becomes each label's
    `pos_weight` (BCE's weight on positives); a resampling sampler is refused (a sample has no one class).
"""

from collections import Counter
from collections.abc import Sequence
from typing import Any, Literal

from torch import Tensor

from proj.data.errors import DataError
from proj.data.sampling import balanced_class_weights

Task = Literal["classification", "regression", "multilabel"]


class TargetsMixin:
    """The targets side of the data contract (proj.data.contract), mixed into ArrayDataModule: a dataset sets `task`
    (and `num_classes`, or `target_names`), and this says what follows for its targets."""

    task: Task = "classification"
    num_classes: int  # classification only
    target_names: list[str] = []  # regression: a name per target column (e.g. ["progression"])
    # from ArrayDataModule: stats, hparams, setup(), train_labels(), predicting_only and placeholder_targets()

    def check_task(self, sampler: str, class_weights: Any, mixup_alpha: float, cutmix_alpha: float) -> None:
        """At construction: a known task, and for regression none of the options that act on classes."""
        if self.task not in ("classification", "regression", "multilabel"):
            raise DataError(
                f"{type(self).__name__}.task={self.task!r}: expected classification, regression or multilabel"
            )
        if self.task == "regression":
            refuse_class_options(sampler, class_weights, mixup_alpha, cutmix_alpha)
        if self.task == "multilabel" and sampler != "none":
            raise DataError(
                f"data.sampler={sampler!r} rebalances single classes, but a multi-label sample has several (or none): "
                "set sampler: none, and class_weights: balanced to weigh each label's positives instead"
            )

    @property
    def is_classification(self) -> bool:
        return self.task == "classification"

    @property
    def is_multilabel(self) -> bool:
        return self.task == "multilabel"

    def multi_hot(self, y: Tensor) -> Tensor:
        """Multi-label targets as float32 (N, k) of 0 / 1, k the number of labels: a row of another width, or a
        value other than 0 or 1, is one line naming the row."""
        names, k = self.classes, self.num_classes
        if y.ndim != 2 or y.shape[1] != k:
            width = y.shape[1] if y.ndim == 2 else 1
            raise DataError(
                f"{type(self).__name__}: a label row has {width} value(s) for the {k} labels {names}: give each "
                f"sample one 0 / 1 per label (targets of shape (N, {k}))"
            )
        bad = ~((y == 0) | (y == 1)).all(1)
        if bad.any():
            row = int(bad.nonzero()[0])
            raise DataError(
                f"{type(self).__name__}: label row {row} is {y[row].tolist()}: each value must be 0 or 1 "
                f"(one per label of {names})"
            )
        return y.float()

    def float_targets(self, y: Tensor) -> Tensor:
        """Regression targets as float32, (N,) or (N, k), checked against target_names."""
        if y.ndim not in (1, 2):
            raise DataError(
                f"{type(self).__name__}: regression targets have shape {tuple(y.shape)}; need (N,) or (N, k)"
            )
        columns = 1 if y.ndim == 1 else y.shape[1]
        if self.target_names and len(self.target_names) != columns:
            raise DataError(f"{type(self).__name__}: {columns} target column(s) for target_names {self.target_names}")
        return y.float()

    # --- what the model is told about the targets (linked by the CLI) ------------------------------------

    @property
    def num_outputs(self) -> int:
        """Outputs of the model: the number of classes, or of regression target columns."""
        if self.is_classification or self.is_multilabel:
            return self.num_classes
        if self.target_names:
            return len(self.target_names)
        y = self.train_labels()  # targets not named: their shape says
        return 1 if y.ndim == 1 else y.shape[1]

    @property
    def classes(self) -> list[str]:
        """Class (or label) names ("0", "1", ... unless the dataset names them); empty for regression."""
        if not (self.is_classification or self.is_multilabel):
            return []
        names = self.__dict__.get("_classes")
        return list(names) if names is not None else [str(i) for i in range(self.num_classes)]

    @classes.setter
    def classes(self, names: Sequence[str]) -> None:
        self._classes = [str(n) for n in names]

    @property
    def target_stats(self) -> dict[str, list[float]] | None:
        """Regression: the mean and std of each target column over the training split; None for classes."""
        if self.task != "regression":
            return None
        self.setup()
        return {"mean": list(self.stats["target_mean"]), "std": list(self.stats["target_std"])}

    @property
    def targets(self) -> dict[str, Any]:
        """Everything the model is told about the targets, in one dict linked into every task module
        (`model.init_args.targets`): the task, and its class names and loss weights, or its target names and
        training statistics. One argument for every task, so one parser link serves them all."""
        if self.predicting_only:
            return self.placeholder_targets()
        if self.is_classification:
            return {"task": self.task, "classes": self.classes, "class_weights": self.class_weights}
        if self.is_multilabel:
            return {"task": self.task, "classes": self.classes, "pos_weight": self.class_weights}
        stats = self.target_stats
        return {"task": self.task, "names": self.target_names or None, "mean": stats["mean"], "std": stats["std"]}

    @property
    def class_weights(self) -> list[float] | None:
        """Loss weights for the model (linked by the CLI): None, balanced from training counts, or given.
        Multi-label: each label's pos_weight, balanced = its negatives / its positives in the training split."""
        setting = self.hparams.class_weights
        if setting == "none" or not (self.is_classification or self.is_multilabel):
            return None
        what = "labels" if self.is_multilabel else "classes"
        if setting == "balanced":
            if self.is_multilabel:
                return balanced_pos_weight(self.train_labels(), self.classes)
            return balanced_class_weights(self.train_labels(), self.num_classes)
        if len(setting) != self.num_classes:
            raise DataError(f"data.class_weights has {len(setting)} values for {self.num_classes} {what}")
        return list(setting)


def balanced_pos_weight(y: Tensor, names: Sequence[str]) -> list[float]:
    """Each label's negatives / positives in the training split: BCE's pos_weight, which makes a label's positives
    weigh as much in the loss as its negatives."""
    positives = y.double().sum(0)
    if (positives == 0).any() or (positives == len(y)).any():
        label = names[int(((positives == 0) | (positives == len(y))).nonzero()[0])]
        raise DataError(
            f"data.class_weights=balanced: label {label!r} is always or never set in the training split, so its "
            "weight would be 0 or infinite: give class_weights as a list, or drop that label"
        )
    return ((len(y) - positives) / positives).tolist()


def as_names(values: Sequence[str | int] | None) -> list[str] | None:
    """Column or class names as strings: YAML reads `classes: [0, 1]` as numbers, a CSV's header as text."""
    return None if values is None else [str(v) for v in values]


def check_class_names(classes: Sequence[str] | None) -> None:
    """data.classes, when given: each name once (the model's outputs are read by position)."""
    repeated = sorted(name for name, n in Counter(classes or ()).items() if n > 1)
    if repeated:
        raise DataError(f"data.classes={list(classes)} names {repeated} more than once: give each class once")


def refuse_class_options(sampler: str, class_weights: Any, mixup_alpha: float, cutmix_alpha: float) -> None:
    """Options that act on classes make no sense for a regression: say which, and how to turn each off."""
    refused = []
    if sampler != "none":
        refused.append(f"data.sampler={sampler!r} resamples classes, but the task is regression: set sampler: none")
    if class_weights != "none":
        refused.append(
            f"data.class_weights={class_weights!r} weighs the loss per class, but the task is regression: "
            "set class_weights: none"
        )
    for name, alpha in (("mixup_alpha", mixup_alpha), ("cutmix_alpha", cutmix_alpha)):
        if alpha > 0:
            refused.append(f"data.{name}={alpha} mixes class targets, but the task is regression: set {name}: 0")
    if refused:
        raise DataError("; ".join(refused))


def target_stats(y: Tensor) -> tuple[list[float], list[float]]:
    """Mean and std (population) of each target column, in float64; a constant target keeps std >= 1e-6."""
    values = y.double().reshape(len(y), -1)
    return values.mean(0).tolist(), values.std(0, correction=0).clamp_min(1e-6).tolist()
