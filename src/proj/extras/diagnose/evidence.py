"""What diagnose knows of a run: its config, the health files HealthMonitor wrote, the test evaluation, and two
facts read from its data (the classes' shares of the training split, and test samples also in the training split).
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from proj.extras.diagnose.health_files import HEALTH, read_rows, read_summary

HEADLINE = {"classification": "acc", "multilabel": "f1_macro", "regression": "r2"}  # higher is better for each
MAX_HASHED = 20_000  # samples per split compared for duplicates: a bounded cost on data that does not fit memory
BASELINE_SAMPLES, BASELINE_FEATURES = 5_000, 4_096  # the linear baseline's bounds: a few seconds at most


@dataclass
class Evidence:
    run: Path
    config: dict[str, Any]
    task: str
    steps: list[dict[str, float]] = field(default_factory=list)
    epochs: list[dict[str, float]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)
    train_shares: dict[str, float] = field(default_factory=dict)  # class name -> its share of the training split
    duplicates: tuple[int, int] | None = None  # (test samples whose input is in the training split, compared)
    images: bool = False  # inputs of shape (channels, height, width): augmentation is a fix
    baseline: dict[str, Any] = field(default_factory=dict)  # a linear model's training metric: what the data allows

    @property
    def metric(self) -> str:
        return HEADLINE.get(self.task, "loss")

    def column(self, name: str, rows: str = "epochs") -> list[float]:
        """One column of epochs.csv or steps.csv, its missing values left out."""
        return [r[name] for r in getattr(self, rows) if name in r and not math.isnan(r[name])]

    def blocks(self, prefix: str) -> dict[str, list[float]]:
        """Per block, the column `<prefix>/<block>` of steps.csv (grad, update, dead, zeros, act_std)."""
        names = [k for k in dict.fromkeys(k for row in self.steps for k in row) if k.startswith(prefix + "/")]
        return {name.split("/", 1)[1]: self.column(name, "steps") for name in names}


def gather(run: Path, task: str, dm: Any | None) -> Evidence:
    folder = run / HEALTH
    config = yaml.safe_load((run / "config.yaml").read_text()) or {}
    evaluation_file = run / "evaluation" / "test.json"
    evidence = Evidence(
        run=run,
        config=config,
        task=task,
        steps=read_rows(folder / "steps.csv"),
        epochs=read_rows(folder / "epochs.csv"),
        summary=read_summary(folder),
        evaluation=json.loads(evaluation_file.read_text()) if evaluation_file.is_file() else {},
    )
    if dm is not None:
        evidence.images = len(getattr(dm, "input_shape", None) or ()) == 3
        evidence.train_shares = class_shares(dm)
        train = flat_split(dm, "train")  # read once: a lazy split loads its files for it
        evidence.duplicates = shared_inputs(train, flat_split(dm, "test"))
        evidence.baseline = linear_baseline(train, task)
    return evidence


def flat_split(dm: Any, name: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The first MAX_HASHED inputs and targets of one of the template's splits, as tensors; None for a data module
    of your own, or ragged inputs (texts, sequences: padded batches, not one tensor)."""
    from proj.data.loaders import split_tensors

    split = (getattr(dm, "splits", None) or {}).get(name)
    if split is None:
        return None
    try:
        x, y = split_tensors(split, MAX_HASHED)
    except (AttributeError, TypeError, ValueError, RuntimeError):
        return None
    return (x, y) if isinstance(x, torch.Tensor) else None


def class_shares(dm: Any) -> dict[str, float]:
    """Each class's share of the training split, for a classification data module that says its labels."""
    labels = getattr(dm, "train_labels", None)
    names = getattr(dm, "classes", None)
    if labels is None or not names:
        return {}
    try:
        counts = torch.bincount(labels().reshape(-1).long(), minlength=len(names))[: len(names)]
    except (AttributeError, RuntimeError, ValueError, TypeError):  # multi-label rows, no labels: no shares
        return {}
    total = max(1, int(counts.sum()))
    return {str(n): int(c) / total for n, c in zip(names, counts.tolist(), strict=True)}


def shared_inputs(train: tuple | None, test: tuple | None) -> tuple[int, int] | None:
    """How many test inputs are byte-for-byte in the training split (leakage), of how many compared. Inputs as the
    data module holds them (standardised with the same statistics, so equal stays equal); a split read through
    random per-sample transforms would hide its copies, never invent one."""
    if train is None or test is None:
        return None
    seen = {digest(x) for x in train[0]}
    return sum(digest(x) in seen for x in test[0]), len(test[0])


def linear_baseline(train: tuple | None, task: str) -> dict[str, Any]:
    """How well a linear model (logistic regression, ridge) fits the training split, on its flattened inputs: what
    the data allows a model at least, so a low training metric on noisy data (a table's R^2 of 0.5) is not called
    underfitting. Skipped for other tasks, ragged inputs (texts, sequences) and inputs past the bounds above."""
    if task not in ("classification", "regression") or train is None:
        return {}
    x = train[0][:BASELINE_SAMPLES].reshape(min(len(train[0]), BASELINE_SAMPLES), -1).float().numpy()
    if x.shape[1] > BASELINE_FEATURES or len(x) < 10:
        return {}
    from sklearn.linear_model import LogisticRegression, Ridge

    y = train[1][:BASELINE_SAMPLES].numpy()
    if task == "classification":
        model = LogisticRegression(max_iter=500).fit(x, y)
        return {"model": "logistic regression", "train": float(model.score(x, y))}
    model = Ridge().fit(x, y)
    return {"model": "ridge regression", "train": float(model.score(x, y))}  # R^2, averaged over targets


def digest(x: Any) -> str:
    return hashlib.blake2b(x.contiguous().numpy().tobytes(), digest_size=16).hexdigest()


def median(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return statistics.median(finite) if finite else math.nan


def quarter(values: list[float], which: str) -> list[float]:
    """The first or last quarter of a series (at least one value)."""
    n = max(1, len(values) // 4)
    return values[:n] if which == "first" else values[-n:]
