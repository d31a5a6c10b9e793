"""SMOTE (`data.sampler: smote`): synthetic minority rows added to a table's training split, once, in `setup`.

The other samplers (sampling.py) draw indices into the real rows each epoch; SMOTE writes new rows instead:
each one lies on the segment between a minority row and one of its `smote_neighbors` nearest neighbours of
the same class (imbalanced-learn's SMOTE), until every class is as large as the largest. Validation and test
stay real, so their metrics measure real rows only.

SMOTE is distance-based, so the neighbours are searched on standardised features, with the mean and std of
the real training rows (the statistics `data.standardize` uses, fitted before any synthetic row exists),
whether or not the batches are standardised later. Interpolation commutes with that per-feature scaling,
so the new rows are mapped back and the split keeps holding raw (imputed) values, like every other split.
The draw is seeded by `split_seed`: the same split and the same synthetic rows on every rank and every run.
"""

from collections.abc import Sequence

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import TensorDataset

from proj.data.errors import DataError


def check_smote_settings(sampler: str, input_shape: tuple[int, ...] | None, neighbors: int) -> None:
    """At construction: SMOTE is for feature vectors, and needs at least one neighbour."""
    if sampler != "smote":
        return
    refuse_images("smote interpolates feature vectors", input_shape, "blurred non-images")
    if neighbors < 1:
        raise DataError(f"data.smote_neighbors={neighbors} must be at least 1")


def refuse_images(what: str, input_shape: tuple[int, ...] | None, makes: str) -> None:
    """Synthetic rows are feature vectors: a sample of more than one axis (an image) is refused, saying why."""
    if input_shape is not None and len(input_shape) > 1:
        raise DataError(
            f"data.sampler={what}; for images (input shape {tuple(input_shape)}) that makes {makes}: use sampler: "
            "oversample or class_weights: balanced"
        )


def smote_split(train: TensorDataset, neighbors: int, seed: int, classes: Sequence[str] = ()) -> TensorDataset:
    """The training split with synthetic rows of every smaller class appended after the real rows."""
    from imblearn.over_sampling import SMOTE  # imports scikit-learn (~1 s): paid only by runs that use SMOTE

    x, y = train.tensors
    if x.ndim != 2:  # a dataset without a declared input_shape: refuse here, as at construction
        check_smote_settings("smote", tuple(x.shape[1:]), neighbors)
    check_class_sizes_for_smote(y, neighbors, classes)
    real = x.double().numpy()
    mean, std = real.mean(0), real.std(0).clip(min=1e-6)  # a constant feature stays finite
    sampler = SMOTE(k_neighbors=neighbors, random_state=seed)
    scaled, labels = sampler.fit_resample((real - mean) / std, y.numpy())
    synthetic = torch.as_tensor(scaled[len(real) :] * std + mean, dtype=x.dtype)
    return with_synthetic_rows(train, synthetic, torch.as_tensor(labels[len(real) :], dtype=y.dtype), "SMOTE", classes)


def with_synthetic_rows(
    train: TensorDataset, synthetic: torch.Tensor, labels: torch.Tensor, method: str, classes: Sequence[str] = ()
) -> TensorDataset:
    """The real training rows, then the synthetic ones (smote, gan), saying how many of each class were added."""
    x, y = train.tensors
    added = {name_of(int(c), classes): int(n) for c, n in zip(*labels.unique(return_counts=True), strict=True)}
    rank_zero_info(f"{method}: {len(synthetic)} synthetic training rows added ({added}); validation and test untouched")
    return TensorDataset(torch.cat([x, synthetic]), torch.cat([y, labels]))


def rows_to_add(y: torch.Tensor) -> dict[int, int]:
    """{class: rows it lacks to be as large as the largest class}, for every smaller class that has a row."""
    counts = torch.bincount(y).tolist()
    return {c: max(counts) - n for c, n in enumerate(counts) if 0 < n < max(counts)}


def name_of(label: int, classes: Sequence[str]) -> str:
    return str(classes[label]) if label < len(classes) else str(label)


def check_class_sizes_for_smote(y: torch.Tensor, neighbors: int, classes: Sequence[str] = ()) -> None:
    """Each class SMOTE grows needs `neighbors` other rows of its own; say which class lacks them, and the fix."""
    counts = torch.bincount(y)
    largest = int(counts.max())
    for c, count in enumerate(counts.tolist()):
        if 0 < count < largest and count <= neighbors:
            name = name_of(c, classes)
            fix = f"set data.smote_neighbors to at most {count - 1}, or " if count > 1 else ""
            raise DataError(
                f"data.sampler=smote: class {name!r} has {count} training row(s), but SMOTE interpolates towards "
                f"data.smote_neighbors={neighbors} nearest rows of the same class: {fix}use sampler: oversample"
            )


def synthetic_ids(split_size: int, real_ids: list[str]) -> list[str]:
    """An id for every row of a split: the real rows' own, then `synthetic:<n>` for the rows SMOTE or the GAN added."""
    return real_ids + [f"synthetic:{n}" for n in range(split_size - len(real_ids))]
