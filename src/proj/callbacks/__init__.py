"""The template's own callbacks: only what Lightning does not ship. Named in YAML by class_path.

Run safety: checkpointing.py (atomic writes, last.ckpt every epoch), guards.py (stop at a non-finite loss or
weight; say why a run stopped early), preemption.py (save on SIGTERM / SIGUSR1), rng_state.py (RNG states in
checkpoints).
Outputs: predictions.py (predict writes predictions.csv), pruning.py (gradual magnitude pruning).
Records: run_record.py (run.json and model_card.md in every run directory; the CLI adds it), with run_facts.py
(git, packages, device, the card's facts) and model_card.py (the card, keeping what its author wrote).
Fine-tuning: finetuning.py (freeze part of the net for the first epochs).
Weight averaging: averaging.py (EMA and SWA, whose average is what is validated, saved and tested).
TensorBoard views: confusion_matrix.py and prediction_scatter.py (each for its task), sample_grid.py,
hparams.py, grad_norm.py, throughput.py, lr_monitor.py (the lr of every optimizer step), drawn into every logger
that shows them (loggers.py, which also puts MLflow and W&B runs in the run directory). Per-step work meant only
for the logs runs on the steps whose values reach them (`proj.compat.logs_this_step`).
"""

from proj.callbacks.averaging import EMA, SWA
from proj.callbacks.checkpointing import AtomicCheckpointIO, ModelCheckpointEveryEpoch, run_dir_of_checkpoint
from proj.callbacks.confusion_matrix import ConfusionMatrix
from proj.callbacks.finetuning import Freeze
from proj.callbacks.grad_norm import GradNorm
from proj.callbacks.guards import EarlyStoppingWithReason, FiniteLossGuard, NonFiniteLossError
from proj.callbacks.hparams import HParams
from proj.callbacks.loggers import MLFlowRunLogger, WandbRunLogger
from proj.callbacks.lr_monitor import EveryStepLearningRateMonitor
from proj.callbacks.prediction_scatter import PredictionScatter
from proj.callbacks.predictions import PredictionWriter
from proj.callbacks.preemption import Preemption
from proj.callbacks.pruning import GradualPruning
from proj.callbacks.rng_state import RngState
from proj.callbacks.sample_grid import SampleGrid
from proj.callbacks.throughput import Throughput

__all__ = [
    "EMA",
    "SWA",
    "AtomicCheckpointIO",
    "ConfusionMatrix",
    "EarlyStoppingWithReason",
    "EveryStepLearningRateMonitor",
    "FiniteLossGuard",
    "Freeze",
    "GradNorm",
    "GradualPruning",
    "HParams",
    "MLFlowRunLogger",
    "ModelCheckpointEveryEpoch",
    "NonFiniteLossError",
    "PredictionScatter",
    "PredictionWriter",
    "Preemption",
    "RngState",
    "SampleGrid",
    "Throughput",
    "WandbRunLogger",
    "run_dir_of_checkpoint",
]
