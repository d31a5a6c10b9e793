"""Data modules of variable-length sequences: the shared one, a file of your own, and recorded speech.

SequenceDataModule serves `sequences.Sequences` through the template's splits, samplers, class weights and
loaders; a batch pads its samples to its longest (`pad_collate`). On the device, values are standardised per
feature with the training split's real steps (never the padding), then augmented (training batches only).
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from proj.data.base import ArrayDataModule
from proj.data.errors import DataError
from proj.data.sequence_augment import SequenceAugment
from proj.data.sequences import Padded, Sequences, pad_collate
from proj.data.standardization import channel_stats


class SequenceDataModule(ArrayDataModule):
    """Labelled sequences of (time, features); a subclass says how to read them (`load_arrays` returns a
    Sequences and its labels; `load_test_arrays` a fixed test set). `input_shape` is one step's: (features,).

    Args (the others are ArrayDataModule's; its image options, MixUp / CutMix and SMOTE are refused):
        jitter, scaling, time_mask, crop: the augmentations of training batches (proj.data.sequence_augment); off at
            0 (crop: the smallest share of a sequence kept, off at 1).
    """

    collate = staticmethod(pad_collate)

    def __init__(
        self, jitter: float = 0.0, scaling: float = 0.0, time_mask: float = 0.0, crop: float = 1.0, **kwargs: Any
    ) -> None:
        for name, value in (("jitter", jitter), ("scaling", scaling), ("time_mask", time_mask)):
            if not 0.0 <= value < 1.0:
                raise DataError(f"data.{name}={value} must lie in [0, 1): a share, or a std in standard deviations")
        if not 0.0 < crop <= 1.0:
            raise DataError(f"data.crop={crop}: the smallest share of a sequence kept, in (0, 1]; 1 turns it off")
        refuse_image_options(kwargs)
        super().__init__(**kwargs)
        self.hparams.device_resident = False  # padded per batch: no one tensor to keep on the device (see text.py)
        self.sequence_augment = SequenceAugment(jitter, scaling, time_mask, crop)

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:  # read again (a checkpoint's statistics restored): the ids with it
            self.ids: list[str] = []
        super().setup(stage)
        if "input" in self.stats:  # what export and serve read: inputs are (values, lengths)
            self.stats["input"]["sequence"] = True

    def make_split(self, x: Sequences, y: Tensor, idx: Tensor, train: bool) -> Sequences:
        return x.with_labels(y).subset(idx)

    def channel_stats(self, x: Sequences, train: Tensor) -> tuple[list[float], list[float]]:
        """Per feature (dim 1 of each (time, features) sample), over the training samples' real steps only."""
        return channel_stats(x[int(i)][0] for i in train)

    def sample_id(self, index: int) -> str:
        return self.ids[index]

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        x: Padded = batch["input"]
        if "mean" in self.stats:  # standardised (token ids are not): the padding stays zero
            x = Padded(self.normalize(x.values) * x.mask[..., None], x.lengths, x.mask)
        if self.trainer is not None and self.trainer.training and self.sequence_augment.active:
            x = self.sequence_augment(x)
        return {**batch, "input": x}

    def normalize(self, values: Tensor) -> Tensor:
        mean = torch.as_tensor(self.stats["mean"], dtype=values.dtype, device=values.device)
        std = torch.as_tensor(self.stats["std"], dtype=values.dtype, device=values.device)
        return (values - mean) / std

    def sequences(self, arrays: list[np.ndarray], labels: Any, ids: list[str]) -> Sequences:
        """Checked samples (proj.data.sequences.checked_sample); their ids name them in errors and predictions."""
        found = Sequences.from_arrays(arrays, labels, ids)
        self.ids += ids
        return found


def refuse_image_options(kwargs: dict[str, Any]) -> None:
    """The options of ArrayDataModule that act on images or feature vectors, each refused in one line."""
    refused = {
        "sampler": (kwargs.get("sampler") in ("smote", "gan"), "writes feature vectors, not sequences: use oversample"),
        "augment": (bool(kwargs.get("augment")), "takes kornia image transforms: use jitter, scaling, time_mask, crop"),
        "mixup_alpha": (kwargs.get("mixup_alpha", 0) > 0, "mixes equal-shaped samples, not sequences: set it to 0"),
        "cutmix_alpha": (kwargs.get("cutmix_alpha", 0) > 0, "pastes image boxes: set it to 0"),
        "device_resident": (kwargs.get("device_resident") is True, "holds equal-shaped samples: set it to false"),
    }
    for key, (bad, why) in refused.items():
        if bad:
            raise DataError(f"data.{key}={kwargs[key]!r} {why}")


class SequenceFileDataModule(SequenceDataModule):
    """Sequences from one .npz file: `steps` (every step of every sample, (total steps, features)), `lengths`
    (steps per sample, in order), `labels` (one per sample: class indices, or 0 / 1 rows for multilabel) and,
    optionally, `classes` (the names) and `ids`. `np.savez(path, steps=np.concatenate(seqs), lengths=[len(s) for s
    in seqs], labels=y)` writes one."""

    def __init__(self, path: str, task: Literal["classification", "multilabel"] = "classification", **kwargs: Any):
        self.path, self.task = Path(path), task
        if not self.path.is_file():
            raise DataError(f"data.path={path!r} does not exist: give an .npz file (steps, lengths, labels)")
        with np.load(self.path) as f:
            missing = [k for k in ("steps", "lengths", "labels") if k not in f]
            if missing:
                raise DataError(f"data.path={path!r} has no {missing}: it needs steps, lengths and labels")
            self.arrays = {k: f[k] for k in f.files}
        check_sequence_file(path, self.arrays, task)
        labels = self.arrays["labels"]
        names = self.arrays.get("classes")
        count = labels.shape[1] if labels.ndim == 2 else int(labels.max()) + 1
        self.classes = [str(n) for n in names] if names is not None else [str(i) for i in range(count)]
        self.num_classes = len(self.classes)
        self.input_shape = (self.arrays["steps"].shape[1] if self.arrays["steps"].ndim == 2 else 1,)
        super().__init__(**kwargs)

    def load_arrays(self) -> tuple[Sequences, np.ndarray]:
        a = self.arrays
        bounds = np.concatenate([[0], np.cumsum(a["lengths"])])
        arrays = [a["steps"][bounds[i] : bounds[i + 1]] for i in range(len(a["lengths"]))]
        ids = [str(i) for i in a["ids"]] if "ids" in a else [str(i) for i in range(len(arrays))]
        return self.sequences(arrays, a["labels"], ids), a["labels"]


def check_sequence_file(path: str, a: dict[str, np.ndarray], task: str) -> None:
    """The arrays of a sequence file agree with each other: one line naming the mismatch, before anything is read."""
    steps, lengths, labels = a["steps"], a["lengths"], a["labels"]
    if lengths.ndim != 1 or (lengths < 0).any() or int(lengths.sum()) != len(steps):
        raise DataError(
            f"data.path={path!r}: lengths add up to {int(lengths.sum())} steps, but steps holds {len(steps)} rows: "
            "lengths must give each sample's number of steps, in order"
        )
    if len(labels) != len(lengths):
        raise DataError(f"data.path={path!r}: {len(labels)} labels for {len(lengths)} sequences: give one per sample")
    wanted = 2 if task == "multilabel" else 1
    if labels.ndim != wanted:
        shape = "(samples, labels) of 0 / 1" if wanted == 2 else "(samples,) of class indices"
        raise DataError(f"data.path={path!r}: labels have shape {list(labels.shape)}; task {task} needs {shape}")


class JapaneseVowelsDataModule(SequenceDataModule):
    """The UEA JapaneseVowels set: nine male speakers saying the vowels /ae/, 12 LPC cepstrum coefficients per
    frame, 7 to 29 frames per utterance; 270 training and 370 test utterances (the official test split is kept).
    Read from the files the `aeon` wheel ships (aeon itself is not imported: its pins of numpy and pandas clash
    with the template's, so `make setup` installs it with --no-deps, for these files alone)."""

    num_classes = 9
    input_shape = (12,)
    classes = [f"speaker_{i}" for i in range(1, 10)]

    def load_arrays(self) -> tuple[Sequences, np.ndarray]:
        return self.read("TRAIN")

    def load_test_arrays(self) -> tuple[Sequences, np.ndarray]:
        return self.read("TEST")

    def read(self, part: str) -> tuple[Sequences, np.ndarray]:
        arrays, labels = read_ts(aeon_file(f"JapaneseVowels/JapaneseVowels_{part}.ts"))
        ids = [f"{part.lower()}_{i}" for i in range(len(arrays))]
        return self.sequences(arrays, labels, ids), labels


def aeon_file(name: str) -> Path:
    """A data file inside the installed aeon wheel, found without importing aeon."""
    try:
        path = Path(importlib.metadata.distribution("aeon").locate_file(f"aeon/datasets/data/{name}"))
    except importlib.metadata.PackageNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise DataError(
            f"{name} comes inside the aeon wheel, which is not installed: pip install --no-deps aeon==1.6.0 "
            "(make setup does)"
        )
    return path


def read_ts(path: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """A .ts file of the UEA / UCR archive: after `@data`, one sample per line, its dimensions separated by ":",
    each a comma-separated series, the class label last. Returns (time, dimensions) arrays and labels 0..k-1, in
    the order of the header's `@classLabel true ...` (the same in a training and a test file)."""
    arrays, labels, names, started = [], [], [], False
    for line in path.read_text().splitlines():
        line = line.strip()
        if not started:  # the header: the class labels in their order, then @data
            if line.lower().startswith("@classlabel true"):
                names = line.split()[2:]
            started = line.lower() == "@data"
            continue
        if line:
            *dims, label = line.split(":")
            arrays.append(np.array([[float(v) for v in d.split(",")] for d in dims], dtype=np.float32).T)
            labels.append(label)
    return arrays, np.array([names.index(v) for v in labels], dtype=np.int64)
