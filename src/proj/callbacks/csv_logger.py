"""ResumableCSVLogger: Lightning's CSVLogger, which keeps the metrics a run logged before it was resumed.

Lightning's writer deletes metrics.csv when a run logs into its directory again ("Previous log files in this
directory will be deleted"): after `fit --resume`, the file held only the epochs since the resume. Here the rows
logged before are read when the logger is made and written back at its first write, but those from the resumed
step on: the resumed run logs those again, as the uninterrupted run would have.
"""

from __future__ import annotations

import csv
import warnings
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger

# Its writer still says it deletes the file it was made in; what it deleted is written back (above).
warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")


class ResumableCSVLogger(CSVLogger):
    def __init__(
        self,
        save_dir: str = "logs",
        name: str = "default",
        version: int | str | None = None,
        prefix: str = "",
        flush_logs_every_n_steps: int = 100,
    ) -> None:
        super().__init__(save_dir, name, version, prefix, flush_logs_every_n_steps)
        self.earlier = read_metrics(Path(self.log_dir) / "metrics.csv")  # before the writer deletes it

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        if self.earlier:  # the first write of a resumed run: what it logged before, up to the resumed step
            first = step if step is not None else 0
            self.experiment.metrics[:0] = [row for row in self.earlier if row.get("step", 0) < first]
            self.earlier = []
        super().log_metrics(metrics, step)


def read_metrics(path: Path) -> list[dict[str, float]]:
    """The rows of a metrics.csv as the writer holds them: numbers by name, empty cells left out."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]
    for row in rows:  # counters stay whole numbers, as Lightning logs them
        for counter in ("step", "epoch"):
            if counter in row:
                row[counter] = int(row[counter])
    return rows
