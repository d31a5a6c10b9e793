"""Images in one sub-folder per class (PNG / JPEG, read with PIL), read from their files as training needs them.

    <root>/cat/001.png, <root>/dog/xyz.jpg, ...     class names are the sorted folder names

`setup` lists the files and their labels: nothing is decoded then, so memory does not grow with the folder and
every command starts at once. DataLoader workers (`num_workers`) decode each sample from the original file,
apply `sample_augment` to training samples (e.g. a random-resized crop of the original image) and resize it to
`image_size` (image_files.py). `in_memory: true` instead decodes every image once, resized, into one uint8
tensor: faster epochs for a small folder (it can then live on the device), memory that grows with the folder.

Normalisation statistics come from a seeded sample of `stats_samples` training images, or from `mean` / `std`
given in the config; the run's config.yaml and checkpoints keep them. Before training, every file's header and
end are checked (`check_files`): a file that is not an image, or a truncated JPEG / PNG, is named on one line.

Hidden folders and files (a name starting with ".", such as .ipynb_checkpoints/ or .DS_Store) are never a
class or a sample. 16-bit grayscale images are brought to 8 bits (0..65535 -> 0..255), like every other image.
"""

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from proj.data.base import ArrayDataModule
from proj.data.errors import DataError
from proj.data.image_files import BadFilePolicy, ImageFiles, check_files, collate_present
from proj.data.standardization import channel_stats
from proj.data.targets import as_names, check_class_names

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def visible(path: Path) -> bool:
    return not path.name.startswith(".")


def image_files(folder: Path) -> list[str]:
    """The visible image files of a folder, sorted, as strings (os.scandir: no Path object per file)."""
    with os.scandir(folder) as entries:
        return sorted(
            e.path
            for e in entries
            if not e.name.startswith(".") and e.is_file() and os.path.splitext(e.name)[1].lower() in EXTENSIONS
        )


def class_folders(root: Path, classes: list[str] | None) -> list[str]:
    """The visible sub-folders of root, sorted; or `classes`, which must name them all."""
    found = sorted(d.name for d in root.iterdir() if d.is_dir() and visible(d))
    if classes is not None and sorted(classes) != found:
        raise DataError(
            f"data.root={str(root)!r} holds the class folders {found}, but data.classes is {list(classes)} (a run's "
            "config.yaml names the classes it was trained on): rename the folders, or set data.classes: null to "
            "take those found"
        )
    return list(classes) if classes is not None else found


def refuse_empty_classes(root: Path, classes: list[str], labels: np.ndarray) -> None:
    """Two classes or more, each with an image."""
    counts = np.bincount(labels, minlength=len(classes))
    empty = [name for name, n in zip(classes, counts, strict=True) if n == 0]
    if len(classes) < 2 or empty:
        fix = f", without images: {empty}. Add images to them or remove them" if empty else ""
        raise DataError(
            f"data.root={str(root)!r} needs two or more class sub-folders with images ({', '.join(EXTENSIONS)}); "
            f"found classes {classes}{fix}"
        )


class ImageFolderDataModule(ArrayDataModule):
    scale = 1.0 / 255.0

    def __init__(
        self,
        root: str,
        image_size: tuple[int, int] = (32, 32),
        grayscale: bool = False,
        predict_root: str | None = None,
        classes: list[str | int] | None = None,
        in_memory: bool = False,
        sample_augment: list[nn.Module] | None = None,
        stats_samples: int = 2000,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        check_files: bool = True,
        on_bad_file: BadFilePolicy = "fail",
        **kwargs: Any,
    ) -> None:
        """predict_root: a folder of new images (no class sub-folders) for `predict`.
        classes: the class sub-folders, in the order of the model's outputs (null: those found, sorted). A run's
            config.yaml names them, so that the run predicts `predict_root` without its training folder.
        in_memory: decode every image once in `setup` (small folders) instead of in the workers, per sample.
        sample_augment: kornia augmentations of each training image, on the original before the resize (files
            read lazily only); `augment` acts on batches on the device, after the resize.
        stats_samples: training images the mean and std per channel are measured on (a seeded sample).
        mean, std: per-channel statistics in [0, 1] units, instead of measuring them.
        check_files: read every file's header and end before training, naming the first bad ones.
        on_bad_file: a file found unreadable while training: fail, or skip it (counted, listed in the run's
            skipped_files.txt)."""
        self.root = Path(root)
        self.predict_root = Path(predict_root) if predict_root else None
        if len(image_size) != 2 or min(image_size) < 1:
            raise DataError(f"data.image_size={list(image_size)}: give [height, width], both at least 1 pixel")
        refuse_bad_settings(grayscale, in_memory, sample_augment, stats_samples, mean, std, on_bad_file)
        classes = as_names(classes)
        check_class_names(classes)
        if self.root.is_dir():
            self.classes = class_folders(self.root, classes)
            # One numpy array of paths, not a Python object per file: forked workers share its pages untouched.
            found = [image_files(self.root / name) for name in self.classes]
            self.paths = np.array([p for files in found for p in files], dtype=str)
            self.labels = np.repeat(np.arange(len(found), dtype=np.int64), [len(files) for files in found])
            refuse_empty_classes(self.root, self.classes, self.labels)
        elif self.predict_root and classes:  # as a run's config.yaml gives them: see predict_only.py
            self.predicting_only = f"data.root={str(self.root)!r} is not a directory"
            self.classes, self.paths, self.labels = list(classes), np.array([], dtype=str), np.zeros(0, dtype=np.int64)
        else:
            raise DataError(f"data.root={str(self.root)!r} is not a directory of class sub-folders")
        self.image_size = tuple(image_size)
        self.mode = "L" if grayscale else "RGB"
        self.sample_augment = nn.Sequential(*sample_augment) if sample_augment else None
        self.num_classes = len(self.classes)
        self.input_shape = (1 if grayscale else 3, *self.image_size)
        super().__init__(**kwargs)
        if mean is not None:
            self.restored = {"mean": list(mean), "std": list(std), **self.restored}

    def found_init_args(self) -> dict[str, Any]:
        """Written into the run's config.yaml: the class folders, in the order of the model's outputs, and the
        statistics the images were standardised with."""
        stats = {k: self.stats[k] for k in ("mean", "std") if k in self.stats}
        return {"classes": self.classes, **stats}

    def load_arrays(self) -> tuple[np.ndarray | ImageFiles, np.ndarray]:
        return self.samples(self.paths, torch.as_tensor(self.labels)), self.labels

    def samples(self, paths: list[str] | np.ndarray, labels: Tensor) -> np.ndarray | ImageFiles:
        """The images at `paths`, their files checked (check_files): read when asked, or decoded now (in_memory)."""
        if self.hparams.check_files:
            check_files(paths, self.hparams.num_workers)
        files = self.image_files(paths, labels)
        return files.stack()[0].numpy() if self.hparams.in_memory else files

    def image_files(self, paths: list[str] | np.ndarray, labels: Tensor) -> ImageFiles:
        hp = self.hparams
        return ImageFiles(paths, labels, self.image_size, self.mode, self.sample_augment, hp.on_bad_file)

    def channel_stats(self, x: Tensor | ImageFiles, train: Tensor) -> tuple[list[float], list[float]]:
        if not isinstance(x, ImageFiles):
            return super().channel_stats(x, train)
        # A seeded sample of the training files, decoded (without sample_augment) by the loader's workers.
        g = torch.Generator().manual_seed(self.hparams.split_seed)
        sample = train[torch.randperm(len(train), generator=g)[: self.hparams.stats_samples]]
        files = x.subset(sample)
        loader = torch.utils.data.DataLoader(
            files, batch_size=256, num_workers=self.hparams.num_workers, collate_fn=collate_present
        )
        return channel_stats((images for images, _ in loader), self.scale)

    def sample_id(self, index: int) -> str:
        return str(self.paths[index])

    def load_predict_arrays(self) -> tuple[np.ndarray | ImageFiles, list[str]] | None:
        if self.predict_root is None:
            return None
        if not self.predict_root.is_dir():
            raise DataError(f"data.predict_root={str(self.predict_root)!r} is not a directory of images")
        paths = image_files(self.predict_root)
        if not paths:
            raise DataError(f"data.predict_root={str(self.predict_root)!r} holds no image ({', '.join(EXTENSIONS)})")
        return self.samples(paths, torch.full((len(paths),), -1)), paths

    def read_images(self, paths: list[Path]) -> np.ndarray:
        """The images at `paths`, decoded and resized, as one uint8 (N, C, H, W) array."""
        return self.image_files([str(p) for p in paths], torch.zeros(len(paths))).stack()[0].numpy()

    def teardown(self, stage: str) -> None:
        """A run that skipped unreadable files says how many, and where they are listed."""
        log = self.skip_log()
        if log is None or not log.is_file() or self.trainer is None or not self.trainer.is_global_zero:
            return
        count = len({line.split("\t")[0] for line in log.read_text().splitlines()})  # a val file: read every epoch
        if self.trainer.logger is not None:
            self.trainer.logger.log_metrics({"data/skipped_files": count}, step=self.trainer.global_step)
        rank_zero_warn(f"data.on_bad_file=skip: {count} unreadable file(s) left out, listed in {log}")

    def skip_log(self) -> Path | None:
        if self.hparams.on_bad_file != "skip" or self.trainer is None or self.trainer.log_dir is None:
            return None
        return Path(self.trainer.log_dir) / "skipped_files.txt"

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        log = self.skip_log()
        for split in self.splits.values():
            if isinstance(split, ImageFiles):
                split.skip_log = log


def refuse_bad_settings(
    grayscale: bool, in_memory: bool, sample_augment: Any, stats_samples: int, mean: Any, std: Any, on_bad_file: str
) -> None:
    if in_memory and sample_augment:
        raise DataError(
            "data.sample_augment acts on each original image as it is read; with data.in_memory: true the images "
            "are resized once in setup: set in_memory: false, or move the augmentations to data.augment"
        )
    if in_memory and on_bad_file == "skip":
        raise DataError(
            "data.on_bad_file=skip applies to files read lazily; with data.in_memory: true every file is decoded in "
            "setup, where a bad one is named: set on_bad_file: fail, or in_memory: false"
        )
    if stats_samples < 1:
        raise DataError(f"data.stats_samples={stats_samples} must be at least 1")
    channels = 1 if grayscale else 3
    if (mean is None) != (std is None) or (mean is not None and not len(mean) == len(std) == channels):
        raise DataError(
            f"data.mean={mean} and data.std={std}: give both, one value per channel ({channels}), or neither"
        )
