"""Each seed's result: its test metrics in <out>/seed_<s>/test_metrics.json, written by a callback of the seed's own
config, so that a seed run in this process and one run as `python -m proj fit` in another write it alike. The file
is what marks a seed as done: it is written at the end of the test after fit, atomically (a crash leaves no half
file that would count as a result)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import lightning.pytorch as L
from lightning.pytorch.callbacks import Callback

RESULT = "test_metrics.json"


class SeedResultWriter(Callback):
    """The test metrics (test/*) of a run, as JSON, into `path` at the end of its test."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        metrics = {key: float(v) for key, v in trainer.callback_metrics.items() if key.startswith("test/")}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f".{self.path.name}.partial")
        partial.write_text(json.dumps(metrics, indent=2, sort_keys=True))
        os.replace(partial, self.path)


def seed_dir(out: Path, seed: int) -> Path:
    return out / f"seed_{seed}"


def result_path(out: Path, seed: int) -> Path:
    return seed_dir(out, seed) / RESULT


def read_result(out: Path, seed: int) -> dict[str, Any]:
    return json.loads(result_path(out, seed).read_text())
