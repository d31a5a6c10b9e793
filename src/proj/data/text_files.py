"""Texts and labels from a file of your own: a CSV or a Parquet file with a text column and a label column.

Classification (a label per text) or multi-label (each text's labels joined by ";", e.g. "bug;ui"; an empty cell:
none of them). The classes are those found, sorted, unless `classes` names them. A run's config.yaml records the
classes and the tokenizer (`found_init_args`), so `predict` on a file of new texts (`predict_path`) needs the run,
not the training file.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Literal

import numpy as np

from proj.data.errors import DataError
from proj.data.tabular import encode_labels, parse_label
from proj.data.targets import as_names, check_class_names
from proj.data.text import TextDataModule, checked_texts


class TextCSVDataModule(TextDataModule):
    """A CSV (or a .parquet file) with a text column and a label column.

    Args (the others are TextDataModule's):
        path: the file; a name ending in .parquet is read as Parquet (with pyarrow).
        text, target: the text column and the label column.
        task: classification, or multilabel (labels joined by ";").
        classes: the labels, in the order of the model's outputs (null: those found, sorted).
        predict_path: a file of new texts (the same text column; the label column may be absent).
    """

    def __init__(
        self,
        path: str,
        text: str = "text",
        target: str = "label",
        task: Literal["classification", "multilabel"] = "classification",
        classes: list[str] | None = None,
        predict_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.path, self.text_column, self.target_column, self.task = Path(path), text, target, task
        self.predict_path = Path(predict_path) if predict_path else None
        classes = as_names(classes)
        check_class_names(classes)
        if self.path.is_file():
            self.rows = read_rows(self.path, "data.path", {"text": text, "target": target})
            where = [f"{self.path}:{i + 2}" for i in range(len(self.rows))]  # the line an editor shows
            cells = ["" if r[target] is None else str(r[target]) for r in self.rows]
            labels = [parse_label(c, task, w, target) for c, w in zip(cells, where, strict=True)]
            self.labels, classes = encode_labels(labels, task, classes, self.path, target)
        elif self.predict_path and classes and kwargs.get("tokenizer_path"):  # as a run's config.yaml has them
            self.predicting_only = f"data.path={path!r} does not exist"  # see predict_only.py
        else:
            raise DataError(
                f"data.path={path!r} does not exist: give a CSV or Parquet file with a text and a label column "
                "(predicting data.predict_path without it needs data.classes and data.tokenizer_path, as a run's "
                "config.yaml has them)"
            )
        if len(classes) < 2 and task == "classification":
            raise DataError(f"{path}: the label column {target!r} holds {len(classes)} class(es) {classes}; need 2+")
        self.classes, self.num_classes = classes, len(classes)
        super().__init__(**kwargs)

    def found_init_args(self) -> dict[str, Any]:
        return {**super().found_init_args(), "classes": self.classes}

    def read_texts(self) -> tuple[list[str], np.ndarray, list[str]]:
        texts, ids = texts_of(self.path, self.rows, self.text_column)
        return texts, self.labels, ids

    def load_predict_arrays(self) -> tuple[list[str], list[str]] | None:
        if self.predict_path is None:
            return None
        if not self.predict_path.is_file():
            raise DataError(f"data.predict_path={str(self.predict_path)!r} does not exist")
        rows = read_rows(self.predict_path, "data.predict_path", {"text": self.text_column})
        return texts_of(self.predict_path, rows, self.text_column)


def texts_of(path: Path, rows: list[dict[str, Any]], column: str) -> tuple[list[str], list[str]]:
    """A file's texts, checked (a bad one named by file and line, the line an editor shows), and each row's id."""
    lines = range(2, len(rows) + 2)  # after the header
    return checked_texts([r[column] for r in rows], [f"{path}:{n}" for n in lines]), [f"{path.name}:{n}" for n in lines]


def read_rows(path: Path, option: str, columns: dict[str, str]) -> list[dict[str, Any]]:
    """The rows of a CSV (every cell a string) or a Parquet file (cells of their column's type), checked to have
    `columns` ({option key: column name}) and at least one row."""
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise DataError(f"{option}={str(path)!r} is Parquet, read with pyarrow: pip install pyarrow") from None
        table = pq.read_table(path)
        header, rows = table.column_names, table.to_pylist()
    else:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            header = list(reader.fieldnames or [])
    for key, column in columns.items():
        if column not in header:
            raise DataError(f"data.{key}={column!r} is not a column of {path}; columns: {', '.join(header)}")
    if not rows:
        raise DataError(f"{option}={str(path)!r} has no rows")
    return rows
