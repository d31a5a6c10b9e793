"""The tables of Evaluation's JSON, from the epoch's per-sample arrays (numpy; scikit-learn imported where used):
per-class (per-label, per-target) metrics, the most-confused class pairs, the highest-loss samples."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from proj.extras.diagnose.bootstrap import classification_confusion, metric_functions


def label(task: str, value: np.ndarray, names: list[str]) -> Any:
    """A class as its name, a label row as its names joined by ";", values as a number (or a list of them)."""
    if task == "classification":
        return names[int(value)]
    if task == "multilabel":
        return ";".join(names[j] for j in np.flatnonzero(value))
    values = [round(float(v), 6) for v in np.ravel(value)]
    return values[0] if len(values) == 1 else values


def sample_row(task: str, arrays: dict[str, np.ndarray], names: list[str], i: int) -> dict[str, Any]:
    predicted = arrays["preds"][i].argmax() if task == "classification" else arrays["preds"][i]
    return {
        "id": str(arrays["ids"][i]),
        "true": label(task, arrays["target"][i], names),
        "predicted": label(task, predicted, names),
        "loss": finite(float(arrays["loss"][i])),
    }


def highest_loss(task: str, arrays, names: list[str], hardest: np.ndarray, texts: dict[int, str]) -> list[dict]:
    rows = [sample_row(task, arrays, names, int(i)) for i in hardest]
    for row, i in zip(rows, hardest, strict=True):
        if int(i) in texts:
            row["text"] = texts[int(i)][:300]
    return rows


def per_class(task: str, arrays: dict[str, np.ndarray], names: list[str]) -> list[dict[str, Any]]:
    """Support, share, precision, recall and F1 per class (per label: its positives), or MAE / RMSE / R^2 per
    target, from scikit-learn (imported here: slow to import, and only needed once)."""
    preds, target, n = arrays["preds"], arrays["target"], len(arrays["loss"])
    if task == "regression":
        fns = metric_functions("regression")
        columns = preds.reshape(n, -1), target.reshape(n, -1)
        return [
            {
                "class": name,
                "support": n,
                **{k: finite(fn(columns[0][:, [j]], columns[1][:, [j]])) for k, fn in fns.items()},
            }
            for j, name in enumerate(names)
        ]
    from sklearn.metrics import precision_recall_fscore_support

    decided = preds.argmax(1) if task == "classification" else preds
    labels = list(range(len(names))) if task == "classification" else None
    scores = precision_recall_fscore_support(target, decided, labels=labels, zero_division=0)
    return [
        {
            "class": name,
            "support": int(s),
            "share": int(s) / n,
            "precision": float(p),
            "recall": float(r),
            "f1": float(f),
        }
        for name, p, r, f, s in zip(names, *scores, strict=True)
    ]


def confused_pairs(arrays: dict[str, np.ndarray], names: list[str], top: int) -> list[dict[str, Any]]:
    """The off-diagonal cells of the confusion matrix with the most samples: which class is taken for which."""
    counts = classification_confusion(arrays["preds"], arrays["target"])
    off = [(int(counts[i, j]), i, j) for i, j in zip(*np.nonzero(counts), strict=True) if i != j]
    rows = sorted(off, key=lambda cell: (-cell[0], cell[1], cell[2]))[:top]
    return [
        {"true": names[i], "predicted": names[j], "count": c, "share_of_true": c / int(counts[i].sum())}
        for c, i, j in rows
    ]


def finite(value: Any) -> Any:
    """JSON has no NaN or infinity: None instead (an R^2 of a constant target, a metric of a diverged model)."""
    if isinstance(value, np.generic):
        value = value.item()
    return None if isinstance(value, float) and not math.isfinite(value) else value
