"""scikit-learn's bundled handwritten digits: 1797 real 8x8 grey images of 10 classes, no download."""

import numpy as np

from proj.data.base import ArrayDataModule


class DigitsDataModule(ArrayDataModule):
    num_classes = 10
    input_shape = (1, 8, 8)
    scale = 1.0 / 16.0  # pixel values are 0..16: scaled to [0, 1] on the device, before augmentation

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        from sklearn.datasets import load_digits  # here: scikit-learn is slow to import (see base.py)

        digits = load_digits()
        return digits.images.astype(np.float32)[:, None], digits.target.astype(np.int64)


# Three yes / no facts of each digit's value: the multi-label demo (a digit has any number of them, 0 to 3).
LABELS = {"even": (0, 2, 4, 6, 8), "greater_than_4": (5, 6, 7, 8, 9), "has_loop": (0, 6, 8, 9)}


class MultiLabelDigitsDataModule(DigitsDataModule):
    """The same digits, each labelled with the facts in LABELS that hold for it (an 8 is even, greater than 4 and
    has a loop; a 1 none): a multi-label task with no download (configs/data/digits_multilabel.yaml)."""

    task = "multilabel"
    num_classes = len(LABELS)

    @property
    def classes(self) -> list[str]:
        return list(LABELS)

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        x, digit = super().load_arrays()
        return x, np.stack([np.isin(digit, values) for values in LABELS.values()], 1).astype(np.float32)
