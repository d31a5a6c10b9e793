"""The loaders of ArrayDataModule's splits: DataLoaders, or device-resident batches for a small training split.

A split is a TensorDataset (samples held in memory) or a dataset that reads each sample when asked (an image
folder's files: image_files.ImageFiles), which has `labels` and `stack`. Both go through the same loaders;
only a TensorDataset can be device-resident. A training split that edits each sample as it is read (augmented texts)
sets `keyed`: its loader hands it (index, key) pairs, the key seeding the edits (sampling.Keyed).
"""

from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset

from proj.data.device import DeviceBatches
from proj.data.image_files import collate_present
from proj.data.sampling import ClassBalancedSampler, EpochShuffle, Keyed, ResumableLoader, run_seed

# device_resident "auto": the largest training split moved whole to the device. Drawing batches by index there
# skips the DataLoader's per-sample indexing and collation (benchmarks/data_path.py measures the two paths).
RESIDENT_MAX_BYTES = 2**30


def split_labels(split: Dataset) -> Tensor:
    """The labels of a split, without reading its samples."""
    return split.tensors[1] if isinstance(split, TensorDataset) else split.labels


def split_tensors(split: Dataset, limit: int | None = None) -> tuple[Tensor, Tensor]:
    """The first `limit` samples of a split (all by default) and their targets, as two tensors."""
    if isinstance(split, TensorDataset):
        x, y = split.tensors
        return (x, y) if limit is None else (x[:limit], y[:limit])
    return split.stack(limit)


class Loaders:
    """Mixed into ArrayDataModule, which gives hparams, splits, batch_size, trainer and train_labels()."""

    # How samples become a batch: stacked, leaving out those a file could not be read for (sequences pad instead)
    collate = staticmethod(collate_present)

    def loader(self, split: str, shuffle: bool = False, sampler: Any = None) -> DataLoader:
        hp, data = self.hparams, self.splits[split]
        return DataLoader(
            data, batch_size=self.batch_size, shuffle=shuffle, sampler=sampler, num_workers=hp.num_workers,
            pin_memory=hp.pin_memory, persistent_workers=hp.persistent_workers and hp.num_workers > 0,
            collate_fn=self.collate,
        )  # fmt: skip

    def train_dataloader(self) -> DataLoader | DeviceBatches:
        mode, seed = self.hparams.sampler, self.hparams.split_seed
        # smote, gan: the split itself is balanced (setup), and is shuffled like an unresampled one
        sampler = None if mode in ("none", "smote", "gan") else ClassBalancedSampler(self.train_labels(), mode, seed)
        self.prepared = False
        if self.trainer is not None and self.resident():
            return self.device_batches(sampler)
        # The order is a function of (run seed, epoch), not of the global RNG, and the loader resumes mid-epoch:
        # a resumed run draws the batches, dropout and augmentation an uninterrupted one would (sampling.py).
        hp, seed, data = self.hparams, run_seed(), self.splits["train"]
        order = sampler or EpochShuffle(len(data), seed)
        return ResumableLoader(
            data, batch_size=self.batch_size, sampler=Keyed(order, seed) if getattr(data, "keyed", False) else order,
            generator=torch.Generator().manual_seed(seed), num_workers=hp.num_workers,
            pin_memory=hp.pin_memory, persistent_workers=hp.persistent_workers and hp.num_workers > 0,
            collate_fn=self.collate,
        )  # fmt: skip

    def resident(self) -> bool:
        """Whether training batches come from the device-resident path (see `device_resident`)."""
        setting, data = self.hparams.device_resident, self.splits["train"]
        if not isinstance(data, TensorDataset):  # read from files: nothing to move
            return False
        if setting != "auto":
            return bool(setting)
        x = data.tensors[0]
        return self.hparams.num_workers == 0 and x.numel() * x.element_size() <= RESIDENT_MAX_BYTES

    def device_batches(self, sampler: ClassBalancedSampler | None) -> DeviceBatches:
        trainer = self.trainer
        device = trainer.strategy.root_device
        x, y = (t.to(device) for t in self.splits["train"].tensors)  # once per fit: the split stays there
        # Nothing random happens to a batch without augmentation or mixing: scale and standardise the whole
        # split once, as a hand-written loop would, instead of every batch. Float data only, so the copy on
        # the device is no larger than the split (uint8 images would grow fourfold).
        if self.augment is None and not self.mix.methods and x.is_floating_point():
            x, self.prepared = self.normalize(self.scaled(x)), True
        return DeviceBatches(
            # the run's seed (seed_everything), the same on every rank and again on resume
            x, y, self.batch_size, shuffle=True, seed=run_seed(), order=sampler,
            rank=trainer.global_rank, world_size=trainer.world_size,
        )  # fmt: skip

    def val_dataloader(self) -> DataLoader:
        return self.loader("val")

    def test_dataloader(self) -> DataLoader:
        return self.loader("test")

    def predict_dataloader(self) -> DataLoader:
        self.check_predict_split()
        return self.loader("predict" if "predict" in self.splits else self.hparams.predict_split)
