"""A table in a CSV file: numeric feature columns and one target column.

The target holds class labels (any spelling) for `task: classification`, numbers for `task: regression`.

Missing feature values (empty, NA, NaN) are imputed with the training split's mean or median, then every
feature is standardised with training statistics; both are saved with the run. A non-numeric feature, an
unknown column or a missing (or, for regression, non-numeric) target is reported by column and row before
training.

For an imbalanced table, `sampler: smote` (resampling.py) or `sampler: gan` (gan_oversampling.py) adds synthetic
minority rows to the training split, besides the samplers and class weights every data module has.

A run's config.yaml holds the feature columns and classes the CSV was found to have (`found_init_args`), and its
checkpoints the statistics: `predict` on new rows (`data.predict_path`) needs the run, not the training CSV.
"""

import csv
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from proj.data.base import ArrayDataModule
from proj.data.errors import DataError
from proj.data.splits import check_class_sizes
from proj.data.targets import Task, as_names, check_class_names

MISSING = {"", "na", "nan", "null", "none", "?"}
LABEL_SEPARATOR = ";"  # between the labels of a multi-label row, as predictions.csv writes them


class CSVDataModule(ArrayDataModule):
    def __init__(
        self,
        path: str,
        target: str,
        features: list[str | int] | None = None,
        classes: list[str | int] | None = None,
        impute: Literal["mean", "median"] = "mean",
        predict_path: str | None = None,
        task: Task = "classification",
        **kwargs: Any,
    ) -> None:
        """features: the feature columns, in the model's input order (null: every column but the target).
        classes: the target's labels, in the order of the model's outputs (null: those found, sorted).
        predict_path: a CSV of new rows (same feature columns; the target column may be absent).
        task: classification (the target holds labels), regression (the target holds numbers) or multilabel (the
            target holds each row's labels joined by ";", e.g. "comedy;drama"; an empty cell: none of them)."""
        self.path = Path(path)
        self.predict_path = Path(predict_path) if predict_path else None
        self.impute = impute
        self.task = task
        features, classes = as_names(features), as_names(classes)
        check_class_names(classes)
        if classes is not None and task == "regression":
            raise DataError("data.classes names the labels of a classification; the task is regression: remove it")
        if self.path.is_file():
            self.x, self.y, self.features, classes = read_csv(self.path, target, features, task, classes)
            if task == "classification":
                check_class_sizes(self.y, str(self.path), classes)  # here, naming the file, not first in setup
        elif self.predict_path and features and (classes or task == "regression"):  # as a run's config.yaml
            self.predicting_only = f"data.path={str(self.path)!r} does not exist"  # see predict_only.py
            self.features = list(features)
        else:
            raise DataError(
                f"data.path={str(self.path)!r} does not exist: give the path of a CSV file (predicting the rows of "
                "data.predict_path without it needs data.features and data.classes, as a run's config.yaml has them)"
            )
        if task == "multilabel" and not classes:
            raise DataError(f"{self.path}: the target column {target!r} names no label in any row")
        if task != "regression":
            if len(classes) < 2 and task == "classification":
                raise DataError(
                    f"{self.path}: the target column {target!r} holds {len(classes)} class(es) {classes}; a "
                    "classifier needs at least 2 (or set data.task: regression if it holds values)"
                )
            self.classes = classes
            self.num_classes = len(classes)
        else:
            self.target_names = [target]
        self.input_shape = (len(self.features),)
        super().__init__(**kwargs)

    def found_init_args(self) -> dict[str, Any]:
        """What the CSV was found to hold, written into the run's config.yaml: the run then rebuilds this data
        module without the CSV, to predict new rows, and a changed CSV cannot reorder its columns or classes."""
        return {"features": self.features, "classes": self.classes or None}

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return self.x, self.y

    def sample_id(self, index: int) -> str:
        return f"{self.path.name}:{index + 2}"  # the line in the file (after the header)

    def load_predict_arrays(self) -> tuple[np.ndarray, list[str]] | None:
        if self.predict_path is None:
            return None
        if not self.predict_path.is_file():
            raise DataError(f"data.predict_path={str(self.predict_path)!r} does not exist")
        x = read_features(self.predict_path, self.features)
        return x, [f"{self.predict_path.name}:{i + 2}" for i in range(len(x))]

    def preprocess(self, x: Tensor, train: Tensor) -> Tensor:
        if "impute" not in self.stats:
            rows = x[train]
            fill = rows.nanmean(0) if self.impute == "mean" else rows.nanmedian(0).values
            empty = [self.features[i] for i in torch.nonzero(fill.isnan()).flatten().tolist()]
            if empty:
                raise DataError(f"{self.path}: feature column(s) {empty} have no value in the training split")
            self.stats["impute"] = fill.tolist()
        fill = torch.tensor(self.stats["impute"], dtype=x.dtype)
        return torch.where(x.isnan(), fill.expand_as(x), x)


def read_csv(
    path: Path, target: str, features: list[str] | None, task: Task = "classification", classes: list[str] | None = None
) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """x (float32, NaN where missing), y (class indices, or float32 values), the features and the classes (those
    given, in their order, or those found, sorted)."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise DataError(f"{path} is empty")
    header, body = [h.strip() for h in rows[0]], rows[1:]
    if target not in header:
        raise DataError(f"data.target={target!r} is not a column of {path}; columns: {', '.join(header)}")
    left_out = [h for h in header if h != target and h not in features] if features else []
    if left_out:  # a run's config.yaml lists its columns: a column added to the file since is not used
        shown = ", ".join(left_out[:5]) + (f" and {len(left_out) - 5} more" if len(left_out) > 5 else "")
        rank_zero_info(f"data: {path} has columns outside data.features, left out: {shown} (null takes them all)")
    features = features or [h for h in header if h != target]
    unknown = [f for f in features if f not in header]
    if unknown:
        raise DataError(f"data.features {unknown} are not columns of {path}; columns: {', '.join(header)}")
    t, cols = header.index(target), [header.index(f) for f in features]
    x = np.empty((len(body), len(cols)), dtype=np.float32)
    labels = []
    for r, row in enumerate(body):
        line = r + 2  # 1-based, after the header: what an editor shows
        if len(row) != len(header):
            raise DataError(f"{path}:{line} has {len(row)} fields, the header has {len(header)}")
        if task == "regression" and row[t].strip().lower() not in MISSING:
            labels.append(parse_target(row[t], path, line, target))
        else:  # a missing regression target is named as such by parse_label
            labels.append(parse_label(row[t], task, f"{path}:{line}", target))
        for j, c in enumerate(cols):
            x[r, j] = parse_number(row[c], path, line, header[c])
    if task == "regression":
        return x, np.array(labels, dtype=np.float32), features, []
    y, classes = encode_labels(labels, task, classes, path, target)
    return x, y, features, classes


def parse_label(cell: str, task: Task, where: str, target: str) -> str | set[str]:
    """A target cell of a classification (its label) or a multi-label task (its set of labels, joined by ";")."""
    if task == "multilabel":  # a set of labels: an empty cell is none of them
        if cell.strip().lower() in MISSING - {""}:
            raise DataError(
                f"{where}: the target column {target!r} holds {cell!r}; for a row with none of the labels leave the "
                "cell empty"
            )
        return {name.strip() for name in cell.split(LABEL_SEPARATOR) if name.strip()}
    if cell.strip().lower() in MISSING:
        raise DataError(f"{where}: the target column {target!r} is missing; drop or label that row")
    return cell.strip()


def encode_labels(
    labels: list[str] | list[set[str]], task: Task, classes: list[str] | None, path: Path, target: str
) -> tuple[np.ndarray, list[str]]:
    """Class indices (int64), or one 0 / 1 column per label (float32), and the classes: those given, in their
    order, or those found, sorted."""
    found = sorted(set().union(*labels) if task == "multilabel" else set(labels), key=natural_key)
    unknown = [name for name in found if classes is not None and name not in classes]
    if unknown:
        raise DataError(
            f"{path}: the target column {target!r} holds {unknown}, not in data.classes {classes} (a run's "
            "config.yaml names the classes it was trained on): set data.classes: null to take those found"
        )
    classes = found if classes is None else classes
    if task == "multilabel":  # one 0 / 1 column per label
        return np.array([[name in row for name in classes] for row in labels], dtype=np.float32), classes
    index = {name: i for i, name in enumerate(classes)}
    return np.array([index[v] for v in labels], dtype=np.int64), classes


def read_features(path: Path, features: list[str]) -> np.ndarray:
    """The feature columns of a CSV of new rows, by name."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header = [h.strip() for h in rows[0]] if rows else []
    missing = [c for c in features if c not in header]
    if missing:
        raise DataError(f"{path} lacks the feature column(s) {missing}; columns: {', '.join(header)}")
    cols = [header.index(c) for c in features]
    return np.array(
        [[parse_number(row[c], path, r + 2, header[c]) for c in cols] for r, row in enumerate(rows[1:])],
        dtype=np.float32,
    )


def parse_number(value: str, path: Path, line: int, column: str) -> float:
    text = value.strip()
    if text.lower() in MISSING:
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise DataError(
            f"{path}:{line}: column {column!r} holds {value!r}, not a number. Encode it numerically or leave it "
            "out with data.features"
        ) from None


def parse_target(value: str, path: Path, line: int, column: str) -> float:
    try:
        number = float(value.strip())
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise DataError(
            f"{path}:{line}: the target column {column!r} holds {value!r}, not a number, but the task is "
            "regression. Fix or drop that row, or set data.task: classification if the target holds labels"
        )
    return number


def natural_key(name: str) -> tuple[int, float | str]:
    """Numeric labels sort as numbers (2 before 10), others alphabetically."""
    try:
        return (0, float(name))
    except ValueError:
        return (1, name)
