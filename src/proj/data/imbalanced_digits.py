"""An embedded imbalanced problem: the digits, with most training samples of some classes dropped.

Only the training split is thinned; validation and test keep every class, so macro recall on the test split
shows how well the minority classes are learned (with resampling, class weights, or neither).
"""

from collections.abc import Sequence
from typing import Any

import numpy as np

from proj.data.digits import DigitsDataModule


class ImbalancedDigitsDataModule(DigitsDataModule):
    def __init__(self, minority_classes: Sequence[int] = (0, 1, 2, 3, 4), keep_fraction: float = 0.05, **kwargs: Any):
        if not 0.0 < keep_fraction <= 1.0:
            raise ValueError(f"data.keep_fraction={keep_fraction} must be in (0, 1]")
        bad = [c for c in minority_classes if not 0 <= c < self.num_classes]
        if bad:
            raise ValueError(f"data.minority_classes has {bad}, outside 0..{self.num_classes - 1}")
        self.minority_classes = list(minority_classes)
        self.keep_fraction = keep_fraction
        super().__init__(**kwargs)

    def split_indices(self, y: np.ndarray, fixed_test: int = 0) -> dict[str, np.ndarray]:
        splits = super().split_indices(y, fixed_test)
        rng = np.random.default_rng(self.hparams.split_seed)
        train = splits["train"]
        keep = np.ones(len(train), dtype=bool)
        for c in self.minority_classes:
            members = np.flatnonzero(y[train] == c)
            dropped = rng.permutation(members)[max(1, round(len(members) * self.keep_fraction)) :]
            keep[dropped] = False
        return {**splits, "train": train[keep]}


class ScarceDigitsDataModule(ImbalancedDigitsDataModule):
    """The digits with only `train_fraction` of the training split kept, every class alike (stratified): the
    harder setting of configs/data/scarce_digits.yaml, where a technique's effect on accuracy can show.

    With the whole training split the default run reaches about 99.7% test accuracy, where one image of 360 is
    the whole difference between two recipes. With a tenth of it (about 12 images per class) the same run
    stays near 90%: augmentation, regularisation and averaging have room to help, or to be shown not to.
    Validation and test are the full splits, the same whatever the fraction, so recipes are compared paired.
    """

    def __init__(self, train_fraction: float = 0.1, **kwargs: Any):
        if not 0.0 < train_fraction <= 1.0:
            raise ValueError(f"data.train_fraction={train_fraction} must be in (0, 1]")
        super().__init__(minority_classes=range(self.num_classes), keep_fraction=train_fraction, **kwargs)
