"""Images read from their files one at a time, when a DataLoader worker asks for them: memory does not grow with
the number of files, and `num_workers` processes decode in parallel.

Each sample is decoded from the original file, then (training split only) given the per-sample augmentations
`sample_augment` (kornia, e.g. RandomResizedCrop of the original image), and resized to `image_size`. It leaves
the worker as uint8 (C, H, W), like the in-memory path's samples, so that the batch-level steps on the device
(scaling, `augment`, MixUp / CutMix, standardisation) are the same for both.

A file that cannot be decoded during training follows `on_bad_file`: fail (the default: an error naming the
file) or skip: the sample is left out of its batch, its path and the error are appended to `skip_log` (the run's
skipped_files.txt), and the data module reports the count when the run ends.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, default_collate

from proj.data.errors import DataError

BadFilePolicy = Literal["fail", "skip"]
PIL_ERRORS = (OSError, ValueError, SyntaxError)  # what PIL raises for a truncated, damaged or non-image file
# PIL's modes of more than 8 bits per pixel: 16-bit PNGs open as "I;16" (or "I", 32-bit integers holding
# 0..65535). Its convert("L") clips them at 255 instead of scaling, which turns nearly every pixel white.
WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def to_8bit(im: Image.Image) -> Image.Image:
    """A 16-bit grayscale image as 8-bit grayscale, scaled (65535 -> 255); other images unchanged."""
    if im.mode not in WIDE_MODES:
        return im
    values = np.asarray(im, dtype=np.float64)
    return Image.fromarray(np.clip(np.round(values / 257.0), 0, 255).astype(np.uint8))  # 2-D uint8: mode "L"


def decode_image(
    source: str | Path | bytes, size: tuple[int, int], mode: str, augment: nn.Module | None = None
) -> Tensor:
    """One image file (a path, or its bytes) as uint8 (C, H, W) of `size` (height, width); `augment` (kornia,
    on a batch of one in [0, 1]) sees the original image before the resize."""
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
        im = to_8bit(im).convert(mode)
        if augment is None:
            return as_chw(np.asarray(im.resize(size[::-1], Image.BILINEAR)))
        x = as_chw(np.asarray(im)).float().div_(255.0)[None]
    x = augment(x)
    if tuple(x.shape[-2:]) != tuple(size):
        x = nn.functional.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    return x[0].mul_(255.0).round_().clamp_(0, 255).to(torch.uint8)


def unreadable(path: str) -> str | None:
    """Why a file cannot be an image, found without decoding it: PIL cannot read its header, or a JPEG / PNG has
    lost its end (a truncated copy or download). None for a file that looks whole."""
    try:
        with Image.open(path) as im:
            kind = im.format
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, io.SEEK_END) - 1024))
            tail = f.read()
    except PIL_ERRORS as err:
        return f"not an image ({err})"
    ends = {"JPEG": (b"\xff\xd9", "its end-of-image marker"), "PNG": (b"IEND", "its IEND chunk")}.get(kind)
    if ends and ends[0] not in tail[-16 if kind == "PNG" else -1024 :]:
        return f"a truncated {kind}: it lacks {ends[1]}"
    return None


class FileChecks(Dataset):
    """unreadable() of each path, for a DataLoader's workers to run."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> str | None:
        return unreadable(self.paths[index])


def check_files(paths: Sequence[str], workers: int = 0) -> None:
    """Every file's header and end, read before training by the data's own DataLoader workers: one line per bad
    file. Not a thread pool: its threads would leave glibc arenas behind in this process, which then holds about
    100 MB more for the rest of a long run (benchmarks/data_scale.py measured it)."""
    loader = DataLoader(FileChecks(paths), batch_size=512, num_workers=workers, collate_fn=list)
    found = [(p, why) for p, why in zip(paths, (v for batch in loader for v in batch), strict=True) if why]
    if len(found) == 1:
        (path, why), *_ = found
        raise DataError(f"{path} is {why}: replace or remove it (data.check_files: false skips this check)")
    if found:
        shown = "\n".join(f"  {p}: {why}" for p, why in found[:20])
        more = f"\n  ... and {len(found) - 20} more" if len(found) > 20 else ""
        raise DataError(
            f"{len(found)} image file(s) cannot be read (replace or remove them, or set data.check_files: false and "
            f"data.on_bad_file: skip to leave them out as training meets them):\n{shown}{more}"
        )


def as_chw(pixels: np.ndarray) -> Tensor:
    """PIL's (H, W) or (H, W, C) array as a contiguous (C, H, W) tensor."""
    chw = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
    return torch.from_numpy(np.require(chw, requirements=["C", "W"]))  # PIL's array is read-only


class ImageFiles(Dataset):
    """Labelled image files, decoded on access. Paths are held as one numpy string array (not a list of Python
    objects), so that forked workers share its pages instead of copying them as reference counts change."""

    dtype = torch.uint8  # what a sample holds: the data module records it as the deployed model's input

    def __init__(
        self,
        paths: Sequence[str | Path] | np.ndarray,
        labels: Tensor,
        size: tuple[int, int],
        mode: str,
        augment: nn.Module | None = None,
        on_bad_file: BadFilePolicy = "fail",
    ) -> None:
        self.paths = np.asarray([str(p) for p in paths] if not isinstance(paths, np.ndarray) else paths, dtype=str)
        self.labels, self.size, self.mode, self.augment = torch.as_tensor(labels), tuple(size), mode, augment
        self.on_bad_file = on_bad_file
        self.skip_log: Path | None = None  # set by the data module to the run's skipped_files.txt

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices: Tensor | np.ndarray, train: bool = False) -> ImageFiles:
        """The samples at `indices`; the per-sample augmentations apply to a training split only."""
        idx = np.asarray(indices, dtype=np.int64)
        return ImageFiles(
            self.paths[idx], self.labels[idx], self.size, self.mode, self.augment if train else None, self.on_bad_file
        )

    def with_labels(self, labels: Tensor) -> ImageFiles:
        return ImageFiles(self.paths, labels, self.size, self.mode, None, self.on_bad_file)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor] | None:
        path = self.paths[index]
        try:
            x = decode_image(path, self.size, self.mode, self.augment)
        except PIL_ERRORS as err:
            if self.on_bad_file == "fail":
                raise DataError(
                    f"{path} cannot be read ({err}): replace or remove it, or set data.on_bad_file: skip"
                ) from None
            self.record_skip(path, err)
            return None
        return x, self.labels[index]

    def record_skip(self, path: str, err: Exception) -> None:
        warnings.warn(f"data.on_bad_file=skip: {path} left out ({err})", stacklevel=2)
        if self.skip_log is not None:
            with open(self.skip_log, "a") as f:  # one short line per write: appends from workers do not interleave
                f.write(f"{path}\t{err}\n")

    def stack(self, limit: int | None = None) -> tuple[Tensor, Tensor]:
        """The first `limit` samples (all by default) as one uint8 tensor and their labels."""
        n = len(self) if limit is None else min(limit, len(self))
        samples = [self[i] for i in range(n)]
        kept = [s for s in samples if s is not None]
        return torch.stack([x for x, _ in kept]), torch.stack([y for _, y in kept])


def collate_present(samples: list[Any]) -> Any:
    """default_collate of the samples that were read: a skipped file (None) leaves its batch one sample smaller."""
    present = [s for s in samples if s is not None]
    if not present:
        raise DataError(f"every file of a batch of {len(samples)} was skipped as unreadable (data.on_bad_file: skip)")
    return default_collate(present)
