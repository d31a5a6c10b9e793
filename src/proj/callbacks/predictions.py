"""PredictionWriter: `predict` writes predictions.csv into the run directory.

The columns come from the task module (`prediction_columns` / `prediction_rows`): for a classifier the
predicted class and every class probability, for a regressor the predicted values in the target's units. The
first column is always the sample's id, the first of these that exists: the ids the batch carries (read by the
model's `unpack_batch`), the data module's `sample_ids(split)` (a row index, a file, file:line for a CSV), the
sample's position in the predicted split.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import lightning.pytorch as L
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info

from proj.models.batches import read_batch


class PredictionWriter(BasePredictionWriter):
    """It writes into the logger's directory: `<run>/predict/` when predicting from a checkpoint of a run (the
    command line logs there), else the new run's directory. Under DDP each rank writes predictions.rank<r>.csv.
    """

    def __init__(self, filename: str = "predictions.csv") -> None:
        super().__init__(write_interval="batch")
        self.filename = filename
        self.path: Path | None = None

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        run_dir = Path(trainer.log_dir or ".")
        name = self.filename if trainer.world_size == 1 else f"{Path(self.filename).stem}.rank{trainer.global_rank}.csv"
        self.path = run_dir / name
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.ids = data_module_ids(trainer.datamodule)
        with open(self.path, "w", newline="") as f:
            csv.writer(f).writerow(["id", *pl_module.prediction_columns()])

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
        rows = pl_module.prediction_rows(prediction)
        ids = read_batch(pl_module, batch).ids
        if ids is None and batch_indices:  # the sample's index in its dataset: its id in the data module, or itself
            ids = [self.ids[i] if self.ids is not None else i for i in batch_indices]
        with open(self.path, "a", newline="") as f:
            writer = csv.writer(f)
            for r, row in enumerate(rows):
                writer.writerow([ids[r] if ids else f"{batch_idx}:{r}", *row])

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        rank_zero_info(f"predictions written to {self.path}")


def data_module_ids(dm: Any) -> list[str] | None:
    """The ids of the split that predict runs on, from the data module's `sample_ids(split)` (optional in the data
    contract): its "predict" split when it was given new samples, else its `predict_split` setting."""
    if not callable(getattr(dm, "sample_ids", None)):
        return None
    splits, settings = getattr(dm, "splits", None) or {}, getattr(dm, "hparams", None) or {}
    return dm.sample_ids("predict" if "predict" in splits else settings.get("predict_split", "predict"))
