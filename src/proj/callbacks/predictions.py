"""PredictionWriter: `predict` writes predictions.csv into the run directory.

The columns come from the task module (`prediction_columns` / `prediction_rows`): for a classifier the
predicted class and every class probability, for a regressor the predicted values in the target's units. The
first column is always the sample's id: its row index in its dataset, or file:line for a CSV.
"""

from __future__ import annotations

import csv
from pathlib import Path

import lightning.pytorch as L
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info


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
        dm = trainer.datamodule
        split = "predict" if "predict" in getattr(dm, "splits", {}) else dm.hparams.get("predict_split", "test")
        self.ids = dm.sample_ids(split) if hasattr(dm, "sample_ids") else None
        with open(self.path, "w", newline="") as f:
            csv.writer(f).writerow(["id", *pl_module.prediction_columns()])

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
        rows = pl_module.prediction_rows(prediction)
        ids = [self.ids[i] if self.ids is not None else i for i in batch_indices] if batch_indices else None
        with open(self.path, "a", newline="") as f:
            writer = csv.writer(f)
            for r, row in enumerate(rows):
                writer.writerow([ids[r] if ids else f"{batch_idx}:{r}", *row])

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        rank_zero_info(f"predictions written to {self.path}")
