"""LightningModules: `base.TaskModule` is the training core; each task file says its loss, metrics, predictions."""

from proj.models.base import TargetsMismatch, TaskModule
from proj.models.classifier import Classifier
from proj.models.regressor import Regressor

__all__ = ["Classifier", "Regressor", "TargetsMismatch", "TaskModule"]
