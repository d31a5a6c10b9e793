"""Predicting new samples with a run's checkpoint when the training data is gone (moved, on another machine).

A run's config.yaml holds what its data was found to have (a data module's `found_init_args()`: a CSV's feature
columns, the class names), and its checkpoints the statistics the model was trained with. A data module whose
training data is missing, but which is given new samples and knows those facts from its config, sets
`predicting_only` to why (e.g. "data.path='train.csv' does not exist"): it then builds the predict split alone,
once Lightning has restored the checkpoint's statistics, and any other stage stops with that reason.
"""

from typing import Any

import torch

from proj.data.errors import DataError


class PredictOnly:
    """Mixed into ArrayDataModule (which gives stats, restored, splits, add_predict_split and the targets)."""

    predicting_only: str | None = None  # why only `predict` can run: the training data is missing

    def setup_predict_only(self, stage: Any) -> None:
        if stage not in (None, "predict"):
            command = getattr(stage, "value", stage)  # Lightning passes a TrainerFn
            raise DataError(f"{self.predicting_only}: {command} needs the training data")
        if self.restored and not self.splits:  # else once Lightning restores the checkpoint's statistics
            self.stats = dict(self.restored)
            no_labels = torch.zeros(0, *self.label_shape, dtype=torch.long if self.is_classification else torch.float)
            self.add_predict_split(torch.zeros(0, dtype=torch.long), no_labels)

    @property
    def label_shape(self) -> tuple[int, ...]:
        if self.is_multilabel:
            return (self.num_classes,)
        return () if self.is_classification or len(self.target_names) <= 1 else (len(self.target_names),)

    def check_predict_split(self) -> None:
        if self.predicting_only and "predict" not in self.splits:
            raise DataError(f"{self.predicting_only}: predicting without it needs a checkpoint's statistics")

    def placeholder_targets(self) -> dict[str, Any]:
        """What the training data decided (class weights, the targets' mean and std) lives in the model's buffers,
        restored from the checkpoint with its weights: these values only give them their shapes."""
        if self.task != "regression":
            weights = None if self.hparams.class_weights == "none" else [1.0] * self.num_classes
            key = "pos_weight" if self.is_multilabel else "class_weights"
            return {"task": self.task, "classes": self.classes, key: weights}
        k = len(self.target_names)
        return {"task": self.task, "names": self.target_names, "mean": [0.0] * k, "std": [1.0] * k}
