"""LightningModules: `base.TaskModule` is the training core; each task file says its loss, metrics, predictions;
`batches.py` how a batch is read; `deployable.py` the model as it is deployed."""

from proj.models.base import TaskModule
from proj.models.batches import Batch, BatchError, BatchKeys
from proj.models.classifier import Classifier
from proj.models.multilabel import MultiLabelClassifier
from proj.models.regressor import Regressor
from proj.models.targets import TargetsMismatch

__all__ = [
    "Batch",
    "BatchError",
    "BatchKeys",
    "Classifier",
    "MultiLabelClassifier",
    "Regressor",
    "TargetsMismatch",
    "TaskModule",
]
