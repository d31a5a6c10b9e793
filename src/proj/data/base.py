"""What every DataModule shares: seeded stratified splits, standardisation from the training split, loaders.

A dataset subclass only implements `load_arrays()` (all samples as arrays) and declares `num_classes`
and `input_shape`, which the CLI links into the model so they are never written twice in YAML.
"""

from collections.abc import Sequence
from typing import Any

import lightning.pytorch as L
import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, TensorDataset


class ArrayDataModule(L.LightningDataModule):
    """A dataset small enough to hold as arrays: split once in `setup`, standardised, served by DataLoaders."""

    num_classes: int
    input_shape: tuple[int, ...]

    def __init__(
        self,
        batch_size: int = 64,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        standardize: bool = True,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0.0 < value < 1.0:
                raise ValueError(f"data.{name}={value} must lie strictly between 0 and 1")
        if val_fraction + test_fraction >= 1.0:
            raise ValueError(
                f"data.val_fraction + data.test_fraction = {val_fraction + test_fraction} leaves no training data"
            )
        self.save_hyperparameters()
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        # Standardisation statistics (per channel), computed from the training split in `setup` and saved
        # in checkpoints (state_dict) so that test / predict / export use the same values.
        self.mean: list[float] | None = None
        self.std: list[float] | None = None
        self.splits: dict[str, TensorDataset] = {}

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """All samples as (x: float array of shape (N, *input_shape), y: int array of shape (N,))."""
        raise NotImplementedError

    def split_indices(self, y: np.ndarray) -> dict[str, np.ndarray]:
        """Seeded, stratified train/val/test indices: the same split on every rank and every run."""
        hp = self.hparams
        index = np.arange(len(y))
        rest, test = train_test_split(index, test_size=hp.test_fraction, stratify=y, random_state=hp.split_seed)
        val_size = hp.val_fraction / (1.0 - hp.test_fraction)
        train, val = train_test_split(rest, test_size=val_size, stratify=y[rest], random_state=hp.split_seed)
        return {"train": train, "val": val, "test": test}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:  # made once: fit then test in one process reuses the same split and statistics
            return
        x, y = self.load_arrays()
        x = torch.as_tensor(x, dtype=torch.float32)
        y = torch.as_tensor(y, dtype=torch.long)
        indices = self.split_indices(y.numpy())
        if self.hparams.standardize:
            if self.mean is None:  # not restored from a checkpoint
                self.mean, self.std = channel_stats(x[indices["train"]])
            x = standardize(x, self.mean, self.std)
        self.splits = {name: TensorDataset(x[idx], y[idx]) for name, idx in indices.items()}

    def loader(self, split: str, shuffle: bool = False) -> DataLoader:
        return DataLoader(
            self.splits[split],
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self.loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader("val")

    def test_dataloader(self) -> DataLoader:
        return self.loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self.loader("test")

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Lightning restores this after `setup` has run: rebuild the splits with the saved statistics.
        self.mean, self.std = state_dict["mean"], state_dict["std"]
        if self.splits:
            self.splits = {}
            self.setup()


def channel_stats(x: torch.Tensor) -> tuple[list[float], list[float]]:
    """Mean and standard deviation of each channel (dim 1) over all samples and positions."""
    dims = [d for d in range(x.ndim) if d != 1]
    std = x.std(dim=dims).clamp_min(1e-6)  # a constant channel must not divide by zero
    return x.mean(dim=dims).tolist(), std.tolist()


def standardize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return (x - torch.tensor(mean).view(shape)) / torch.tensor(std).view(shape)
