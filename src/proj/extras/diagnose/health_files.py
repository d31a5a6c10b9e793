"""The health files of a run directory (`<run>/health/`): steps.csv, epochs.csv and summary.json, written by
HealthMonitor and read by diagnose. Plain CSV and JSON, so a spreadsheet or pandas reads them too."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from proj.callbacks.csv_logger import read_metrics

HEALTH = "health"


def append_rows(path: Path, rows: list[dict[str, float]]) -> None:
    """Add rows to a CSV file; rewritten whole when a row has a column the file lacks (an activation first seen)."""
    if not rows:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    header = header_of(path)
    if header and {k for row in rows for k in row} <= set(header):  # the usual case: only the new rows are written
        with open(path, "a", newline="") as f:
            csv.DictWriter(f, header).writerows(rows)
        return
    write_rows(path, [*read_rows(path), *rows], list(dict.fromkeys([*header, *(k for row in rows for k in row)])))


def header_of(path: Path) -> list[str]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return next(csv.reader(f), [])


def write_rows(path: Path, rows: list[dict[str, Any]], columns: list[str] | None = None) -> None:
    columns = columns or list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)


# The rows of a CSV as numbers by column, empty cells left out, step and epoch whole: the reader of the template's
# own metrics.csv serves these files too.
read_rows = read_metrics


def truncate_after(folder: Path, step: int, epoch: int) -> None:
    """Drop what a run recorded from `step` (steps.csv) and `epoch` (epochs.csv) on: a resumed run records it again."""
    for name, key, first in (("steps.csv", "step", step), ("epochs.csv", "epoch", epoch)):
        path = folder / name
        rows = read_rows(path)
        if rows:
            write_rows(path, [r for r in rows if r.get(key, 0) < first], header_of(path))


def epoch_row(metrics: Mapping[str, Any], epoch: int, lr: float) -> dict[str, float]:
    """An epoch's logged scalars (train and validation), with its learning rate."""
    row: dict[str, float] = {"epoch": epoch, "lr": lr}
    for name, value in sorted(metrics.items()):
        if getattr(value, "numel", lambda: 1)() == 1 and not name.startswith("test/"):
            row[name] = float(value)
    return row


def read_summary(folder: Path) -> dict[str, Any]:
    path = folder / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else {}
