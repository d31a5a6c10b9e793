"""ShardDataModule: a data module that streams the shards `python -m proj shard` wrote (index.py, stream.py).

    data:
      class_path: proj.extras.shards.ShardDataModule
      init_args: {url: shards/digits, num_workers: 2}      # or s3://bucket/digits, gs://..., https://...

The splits, classes and training statistics were fixed when the shards were written (index.json), so the split
settings of other data modules (val_fraction, cv_folds, ...) do not apply here. Everything after a batch leaves
the loader is the core's: scaling, `augment`, MixUp / CutMix and standardisation on the device, class weights.
"""

from __future__ import annotations

from typing import Any

import fsspec
import numpy as np
import pyarrow.parquet as pq
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from proj.data.base import ArrayDataModule
from proj.data.errors import DataError
from proj.data.image_files import decode_image
from proj.data.sampling import run_seed
from proj.extras.shards.index import join, read_index
from proj.extras.shards.stream import ShardStream, StreamLoader


class Decoder:
    """A stored sample (x, y) as tensors, in a worker: an image file's bytes decoded (augmented when training), an
    array's raw bytes, or a table row (missing values filled with the training split's means)."""

    def __init__(self, index: dict[str, Any], augment: nn.Module | None = None) -> None:
        self.kind, self.shape = index["kind"], tuple(index["input_shape"])
        self.dtype = np.dtype(index["stats"]["input"]["dtype"])
        self.image = index.get("image")
        self.augment = augment
        self.fill = torch.tensor(index["stats"]["impute"]) if "impute" in index["stats"] else None
        self.y_dtype = torch.long if index["task"] == "classification" else torch.float32

    def __call__(self, x: Any, y: Any) -> tuple[Tensor, Tensor]:
        if self.kind == "image":
            xt = decode_image(x, tuple(self.image["size"]), self.image["mode"], self.augment)
        elif self.kind == "array":
            xt = torch.from_numpy(np.frombuffer(x, dtype=self.dtype).reshape(self.shape).copy())
        else:
            xt = torch.tensor(x, dtype=torch.float32)
            if self.fill is not None:
                xt = torch.where(xt.isnan(), self.fill, xt)
        return xt, torch.tensor(y, dtype=self.y_dtype)


class ShardDataModule(ArrayDataModule):
    def __init__(
        self,
        url: str,
        shuffle_window: int = 1024,
        sample_augment: list[nn.Module] | None = None,
        **kwargs: Any,
    ) -> None:
        """url: the shard folder (index.json and its splits): a path, or an fsspec URL (s3://, gs://, https://).
        shuffle_window: samples shuffled together, after the shards' order (a worker holds one window; the
            shards were written in a shuffled order already, so a window of 1024 mixes enough while keeping each
            worker's memory small: benchmarks/data_scale.py).
        sample_augment: kornia augmentations of each training image, on the original before the resize."""
        self.url, self.index = url, read_index(url)
        index = self.index
        self.task = index["task"]
        if self.task == "classification":
            self.classes, self.num_classes = list(index["classes"]), len(index["classes"])
        self.target_names = list(index.get("target_names") or [])
        self.features = index.get("features")
        self.input_shape = tuple(index["input_shape"])
        self.scale = index["stats"]["input"]["scale"]
        self.augment_each = nn.Sequential(*sample_augment) if sample_augment else None
        refuse_random_access(kwargs, sample_augment, index["kind"])
        super().__init__(**kwargs)
        self.shuffle_window = shuffle_window

    def setup(self, stage: str | None = None) -> None:
        self.stats = {**self.index["stats"], **self.restored}
        self.splits = {name: self.stream(name) for name in self.index["splits"]}

    def stream(self, split: str, train: bool = False) -> ShardStream:
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        if split == "predict" or (trainer is not None and trainer.predicting):
            rank, world = 0, 1  # predictions.csv lists every sample once, in the shards' order
        return ShardStream(
            self.url, self.index["splits"][split]["shards"], Decoder(self.index, self.augment_each if train else None),
            self.batch_size, shuffle=train, seed=run_seed(), rank=rank, world_size=world, window=self.shuffle_window,
        )  # fmt: skip

    def train_dataloader(self) -> StreamLoader:
        self.prepared = False
        hp = self.hparams
        # A generator of its own: the loader draws its workers' base seed there, not from the global RNG, which a
        # resumed run restores from the checkpoint and which must not shift (the shards' own draws are per batch).
        return StreamLoader(
            self.stream("train", train=True), epoch_of=lambda: self.trainer.current_epoch if self.trainer else 0,
            num_workers=hp.num_workers, pin_memory=hp.pin_memory, generator=torch.Generator().manual_seed(0),
        )  # fmt: skip

    def loader(self, split: str, shuffle: bool = False, sampler: Any = None) -> DataLoader:
        hp = self.hparams
        return DataLoader(
            self.stream(split), batch_size=None, num_workers=hp.num_workers, pin_memory=hp.pin_memory,
            generator=torch.Generator().manual_seed(0),
        )  # fmt: skip

    def predict_dataloader(self) -> DataLoader:
        return self.loader(self.hparams.predict_split)

    def train_labels(self) -> Tensor:
        """The training labels' counts, as labels (what balanced class weights need), from the index."""
        counts = torch.tensor(self.index["splits"]["train"]["class_counts"])
        return torch.repeat_interleave(torch.arange(len(counts)), counts)

    def sample_ids(self, split: str) -> list[str]:
        if split == "predict":
            split = self.hparams.predict_split
        ids = []
        for shard in self.index["splits"][split]["shards"]:
            with fsspec.open(join(self.url, shard["file"]), "rb") as f:
                ids += pq.read_table(f, columns=["id"]).column("id").to_pylist()
        return ids


def refuse_random_access(kwargs: dict[str, Any], sample_augment: Any, kind: str) -> None:
    """Options that need every sample at hand, or that the shards already fixed: one line each, before training."""
    sampler = kwargs.get("sampler", "none")
    if sampler != "none":
        raise DataError(
            f"data.sampler={sampler!r} draws samples by index, which a stream cannot: set sampler: none and weigh "
            "the classes instead (class_weights: balanced), or resample when writing the shards"
        )
    if kwargs.get("cv_folds", 0):
        raise DataError("data.cv_folds: the shards hold fixed splits; cross-validate the data module they came from")
    if kwargs.get("device_resident", "auto") is True:
        raise DataError("data.device_resident: true needs the training split in memory; a stream is read in batches")
    if sample_augment and kind != "image":
        raise DataError(f"data.sample_augment augments images; these shards hold {kind} samples: remove it")
