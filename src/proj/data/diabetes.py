"""scikit-learn's bundled diabetes data: 442 patients, 10 baseline features in raw units, no download.

The target is a quantitative measure of disease progression one year after baseline (25..346): a regression.
Features are standardised with training statistics like any table; the target stays raw in the batches and
its training mean and std (`target_stats`) go to the model. A sample's id is its row in `load_diabetes`.
"""

import numpy as np

from proj.data.base import ArrayDataModule


class DiabetesDataModule(ArrayDataModule):
    task = "regression"
    input_shape = (10,)
    target_names = ["progression"]
    features = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        from sklearn.datasets import load_diabetes  # here: scikit-learn is slow to import (see base.py)

        data = load_diabetes(scaled=False)
        return data.data.astype(np.float32), data.target.astype(np.float32)
