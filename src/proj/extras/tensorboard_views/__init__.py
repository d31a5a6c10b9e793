"""What the default run draws into TensorBoard (and MLflow and W&B) besides Lightning's curves: the confusion
matrix or the predicted-vs-true scatter, a grid of augmented samples (for texts, a table of misclassified ones),
the HPARAMS table, the gradient norm and the throughput. Each is a callback in configs/default.yaml. Docs:
docs/extras/tensorboard_views.md."""

from proj.extras.tensorboard_views.confusion_matrix import ConfusionMatrix
from proj.extras.tensorboard_views.grad_norm import GradNorm
from proj.extras.tensorboard_views.hparams import HParams
from proj.extras.tensorboard_views.misclassified_texts import MisclassifiedTexts
from proj.extras.tensorboard_views.prediction_scatter import PredictionScatter
from proj.extras.tensorboard_views.sample_grid import SampleGrid
from proj.extras.tensorboard_views.throughput import Throughput

__all__ = [
    "ConfusionMatrix",
    "GradNorm",
    "HParams",
    "MisclassifiedTexts",
    "PredictionScatter",
    "SampleGrid",
    "Throughput",
]
