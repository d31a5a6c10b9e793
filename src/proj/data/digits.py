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
