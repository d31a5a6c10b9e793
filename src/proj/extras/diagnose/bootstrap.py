"""Bootstrap intervals of a metric over test samples, and of the difference between two runs on the same samples.

A metric is a function `fn(preds, target) -> float` of whole arrays (numpy only, no Lightning, no torch):

- classification: preds are probabilities (n, classes), target class indices (n,);
- multilabel: preds are 0 / 1 decisions (n, labels), target 0 / 1 (n, labels);
- regression: preds and target are values in the target's units, (n, k) or (n,).

`metric_functions(task)` names them as the task modules log them (test/acc, test/f1, test/mae, ...).
`interval` is a percentile bootstrap: the samples are drawn with replacement `resamples` times from a seeded
generator, so the same inputs always give the same interval. `paired_difference` draws the same indices for both
runs: the difference of two runs on one test split varies far less than either metric alone, because the hard
samples are hard for both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

Metric = Callable[[np.ndarray, np.ndarray], float]


def classification_confusion(preds: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(classes, classes) counts, rows true, columns predicted (the argmax of the probabilities)."""
    k = preds.shape[1]
    return np.bincount(target.astype(np.int64) * k + preds.argmax(1), minlength=k * k).reshape(k, k)


def accuracy(preds: np.ndarray, target: np.ndarray) -> float:
    return float(np.mean(preds.argmax(1) == target))


def macro_f1(preds: np.ndarray, target: np.ndarray) -> float:
    """Macro F1 over the classes present in the target or the predictions, as sklearn's f1_score and torchmetrics'
    MulticlassF1Score average over them: a class never seen nor predicted has no F1 to average."""
    counts = classification_confusion(preds, target)
    tp, seen_or_predicted = np.diag(counts), counts.sum(0) + counts.sum(1)  # 2tp + fp + fn
    present = seen_or_predicted > 0
    return float(np.mean(2 * tp[present] / seen_or_predicted[present]))


def multilabel_f1(decided: np.ndarray, target: np.ndarray) -> float:
    """Macro F1 over every label; a label neither true nor decided anywhere counts 0, as sklearn (zero_division 0)
    and torchmetrics' MultilabelF1Score count it."""
    decided, target = decided.astype(bool), target.astype(bool)
    tp = (decided & target).sum(0)
    seen_or_decided = decided.sum(0) + target.sum(0)
    return float(np.mean(np.divide(2 * tp, seen_or_decided, out=np.zeros(len(tp)), where=seen_or_decided > 0)))


def subset_accuracy(decided: np.ndarray, target: np.ndarray) -> float:
    """The share of samples with every label right (torchmetrics' exact match)."""
    return float(np.mean((decided.astype(bool) == target.astype(bool)).all(1)))


def as_columns(values: np.ndarray) -> np.ndarray:
    return values.reshape(len(values), -1).astype(np.float64)


def mae(preds: np.ndarray, target: np.ndarray) -> float:
    return float(np.mean(np.abs(as_columns(preds) - as_columns(target))))


def rmse(preds: np.ndarray, target: np.ndarray) -> float:
    return float(np.sqrt(np.mean((as_columns(preds) - as_columns(target)) ** 2)))


def r2(preds: np.ndarray, target: np.ndarray) -> float:
    """R^2 of each target, averaged over targets (sklearn's r2_score, torchmetrics' R2Score: uniform_average).
    A resample whose target is constant has none: NaN, which the interval's percentiles skip."""
    p, t = as_columns(preds), as_columns(target)
    residual, total = ((t - p) ** 2).sum(0), ((t - t.mean(0)) ** 2).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        scores = np.where(total > 0, 1 - residual / total, np.nan)
    return float(np.mean(scores))


METRICS: dict[str, dict[str, Metric]] = {
    "classification": {"acc": accuracy, "f1": macro_f1},
    "multilabel": {"f1": multilabel_f1, "subset_acc": subset_accuracy},
    "regression": {"mae": mae, "rmse": rmse, "r2": r2},
}


def metric_functions(task: str) -> dict[str, Metric]:
    """The metrics with intervals for a task: {name: fn(preds, target) -> float}."""
    if task not in METRICS:
        raise ValueError(f"no bootstrap metrics for task {task!r}: one of {', '.join(METRICS)}")
    return dict(METRICS[task])


def resampled_indices(n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """`resamples` arrays of n sample indices drawn with replacement from a seeded generator, one at a time: a big
    test set never holds (resamples, n) indices at once."""
    rng = np.random.default_rng(seed)
    for _ in range(resamples):
        yield rng.integers(0, n, size=n)


def resampled(statistic: Callable[[np.ndarray], float], n: int, resamples: int, seed: int, level: float):
    """The central `level` of a statistic of the sample indices over bootstrap resamples: (low, high)."""
    values = [statistic(i) for i in resampled_indices(n, resamples, seed)]
    tail = 100 * (1 - level) / 2
    low, high = np.nanpercentile(np.asarray(values, dtype=np.float64), [tail, 100 - tail])
    return float(low), float(high)


def interval(
    fn: Metric,
    preds: np.ndarray,
    target: np.ndarray,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, float]:
    """{"value": fn on every sample, "low", "high"}: the central `level` of fn over bootstrap resamples."""
    preds, target = np.asarray(preds), np.asarray(target)
    low, high = resampled(lambda i: fn(preds[i], target[i]), len(target), resamples, seed, level)
    return {"value": fn(preds, target), "low": low, "high": high}


def paired_difference(
    fn: Metric,
    preds_a: np.ndarray,
    preds_b: np.ndarray,
    target: np.ndarray,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, float]:
    """{"value": fn(b) - fn(a), "low", "high"}: run b against run a on the same samples, each resample drawing the
    same indices for both. An interval that excludes 0 says b differs from a beyond the test split's noise."""
    a, b, target = np.asarray(preds_a), np.asarray(preds_b), np.asarray(target)
    if len(a) != len(target) or len(b) != len(target):
        raise ValueError(f"paired runs need one prediction per sample: {len(a)}, {len(b)} for {len(target)} targets")
    low, high = resampled(lambda i: fn(b[i], target[i]) - fn(a[i], target[i]), len(target), resamples, seed, level)
    return {"value": fn(b, target) - fn(a, target), "low": low, "high": high}
