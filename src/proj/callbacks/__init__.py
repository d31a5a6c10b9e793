"""The callbacks a correct run needs, beyond Lightning's own; each is named by class_path in configs/default.yaml.

- checkpointing.py: checkpoints written atomically, last.ckpt after every epoch, paths relative to their folder;
- guards.py: stop at the first non-finite loss or weight, naming the step; say why early stopping stopped a run;
- preemption.py: SIGTERM / SIGUSR1 save last.ckpt and end the run so that `--resume` continues it bitwise;
- rng_state.py: the random generators in checkpoints, so a resumed run draws what the uninterrupted one would;
- predictions.py: `predict` writes predictions.csv, with the dataset's own sample ids;
- lr_monitor.py: the lr of every optimizer step for step schedules;
- net_summary.py: the net and its blocks, with their parameters, at the start of fit;
- csv_logger.py: Lightning's CSV logger, keeping a resumed run's earlier rows (configs/logger/csv.yaml).

The views (confusion matrix, sample grid, HPARAMS, ...), weight averaging, pruning, fine-tuning and the run record
are extras: proj/extras/.
"""

from proj.callbacks.checkpointing import AtomicCheckpointIO, ModelCheckpointEveryEpoch, run_dir_of_checkpoint
from proj.callbacks.csv_logger import ResumableCSVLogger
from proj.callbacks.guards import EarlyStoppingWithReason, FiniteLossGuard, NonFiniteLossError
from proj.callbacks.lr_monitor import EveryStepLearningRateMonitor
from proj.callbacks.net_summary import NetSummary
from proj.callbacks.predictions import PredictionWriter
from proj.callbacks.preemption import Preemption
from proj.callbacks.rng_state import RngState

__all__ = [
    "AtomicCheckpointIO",
    "EarlyStoppingWithReason",
    "EveryStepLearningRateMonitor",
    "FiniteLossGuard",
    "ModelCheckpointEveryEpoch",
    "NetSummary",
    "NonFiniteLossError",
    "PredictionWriter",
    "Preemption",
    "ResumableCSVLogger",
    "RngState",
    "run_dir_of_checkpoint",
]
