"""Seeded train / validation / test splits: stratified for classification, plain shuffled for regression.

Multi-label targets are stratified over their label combinations (each combination keeps its share in every
split); combinations too rare for that are pooled into one stratum (`combination_strata`).

The same arguments give the same indices on every rank and every run. k-fold cross-validation takes fold
`cv_fold` of a `cv_folds`-fold partition as the test split (StratifiedKFold for classes, KFold for values);
validation is then carved out of the other folds.
"""

import itertools
import math
from collections.abc import Sequence

import numpy as np

from proj.data.errors import DataError


def split_indices(
    y: np.ndarray,
    *,
    stratify: bool,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    fixed_test: int = 0,
    cv_folds: int = 0,
    cv_fold: int = 0,
    classes: Sequence[str] = (),
) -> dict[str, np.ndarray]:
    """Indices of the train, val and test splits of the samples whose targets are `y`.

    With a fixed test set, its `fixed_test` samples come last in y and only validation is carved out.
    stratify: keep each class's share in every split (y holds class indices; `classes` names them in errors).
    """
    # Imported here, not at the top: scikit-learn adds to the start-up of --help, --print_config and new
    # (benchmarks/startup.py measures what the template adds to Lightning's start-up).
    from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

    pool = np.arange(len(y) - fixed_test)
    if stratify and y.ndim == 2:  # multi-label: one stratum per combination of labels
        smallest = min(val_fraction, test_fraction, 1 / cv_folds if cv_folds else 1.0)
        y, classes = combination_strata(y[: len(pool)], smallest), ()
        y = np.concatenate([y, np.zeros(fixed_test, dtype=y.dtype)])

    def labels(idx: np.ndarray, where: str, share: tuple[str, float] | None = None) -> np.ndarray | None:
        if not stratify:
            return None
        check_class_sizes(y[idx], where, classes)
        if share is not None:
            check_share(y[idx], *share)
        return y[idx]

    if cv_folds:  # k-fold: this fold is the test split (a fixed test set is not used)
        folds = StratifiedKFold if stratify else KFold
        split = folds(cv_folds, shuffle=True, random_state=seed).split(pool, labels(pool, "the data"))
        rest, test = next(itertools.islice(split, cv_fold, None))
        pool, test = pool[rest], pool[test]
        val_size = val_fraction / (1.0 - 1.0 / cv_folds)
    elif fixed_test:
        test = np.arange(len(y) - fixed_test, len(y))
        val_size = val_fraction
    else:
        pool, test = train_test_split(
            pool,
            test_size=test_fraction,
            stratify=labels(pool, "the data", ("test_fraction", test_fraction)),
            random_state=seed,
        )
        val_size = val_fraction / (1.0 - test_fraction)
    where = "the training data" if fixed_test and not cv_folds else "the data left after the test split"
    stratified = labels(pool, where, ("val_fraction", val_size))
    train, val = train_test_split(pool, test_size=val_size, stratify=stratified, random_state=seed)
    return {"train": train, "val": val, "test": test}


def combination_strata(y: np.ndarray, smallest: float) -> np.ndarray:
    """Multi-label rows (N, k) as one stratum per combination of labels, for a stratified split.

    A combination with fewer rows than a split of share `smallest` needs to get two of them (ceil(2 / smallest))
    joins one stratum of rare combinations, and if that is still too small, the largest stratum: those rows are
    then split as a plain shuffle would, while every common combination keeps its share in every split."""
    least = math.ceil(2 / smallest)
    _, strata, counts = np.unique(y.astype(np.int8), axis=0, return_inverse=True, return_counts=True)
    strata = strata.reshape(-1)
    rare = counts[strata] < least
    if rare.any():
        strata[rare] = len(counts) if rare.sum() >= least else int(np.argmax(counts))
    return np.unique(strata, return_inverse=True)[1].reshape(-1)


def check_split_settings(val_fraction: float, test_fraction: float, cv_folds: int, cv_fold: int) -> None:
    """At construction: shares that leave data in every split, and a fold that exists."""
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < value < 1.0:
            raise DataError(f"data.{name}={value} must lie strictly between 0 and 1")
    if val_fraction + test_fraction >= 1.0:
        raise DataError(f"data.val_fraction + data.test_fraction = {val_fraction + test_fraction} leaves no data")
    if cv_folds and not (cv_folds >= 2 and 0 <= cv_fold < cv_folds):
        raise DataError(
            f"data.cv_fold={cv_fold} with data.cv_folds={cv_folds}: need cv_folds >= 2, 0 <= cv_fold < cv_folds"
        )


def check_share(y: np.ndarray, key: str, size: float) -> None:
    """A stratified split holds out ceil(size * n) samples: at least one per class, and leaves one per class."""
    n, k = len(y), len(np.unique(y))
    held = math.ceil(size * n)
    if held < k or n - held < k:
        raise DataError(
            f"data.{key}: a stratified split of {n} samples of {k} classes would hold out {held}, and every class "
            f"needs a sample on each side: set data.{key} so that {k} to {n - k} samples are held out, or add samples"
        )


def check_class_sizes(y: np.ndarray, where: str, classes: Sequence[str] = ()) -> None:
    """A stratified split needs two samples of every class: say which class has fewer, before sklearn does."""
    if len(classes):  # every class named, those without a row too (data.classes may list one the file lacks)
        values, counts = np.arange(len(classes)), np.bincount(y, minlength=len(classes))
    else:
        values, counts = np.unique(y, return_counts=True)
    small = [(int(v), int(n)) for v, n in zip(values, counts, strict=True) if n < 2]
    if small:
        named = ", ".join(f"{classes[v]!r} ({n} row)" if 0 <= v < len(classes) else f"{v} ({n} row)" for v, n in small)
        raise DataError(
            f"{'class' if len(small) == 1 else 'classes'} {named} in {where}: a stratified split needs at least "
            "2 rows of every class. Add rows of that class, or drop it (or merge it with another) before training"
        )
