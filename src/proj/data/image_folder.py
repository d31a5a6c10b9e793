"""Images in one sub-folder per class (PNG / JPEG, read with PIL), resized to one size and held in memory.

    <root>/cat/001.png, <root>/dog/xyz.jpg, ...     class names are the sorted folder names

Hidden folders and files (a name starting with ".", such as .ipynb_checkpoints/ or .DS_Store) are never a
class or a sample. Every file is decoded in `setup`, so an unreadable or corrupt one is reported by path before
training. 16-bit grayscale images are brought to 8 bits (0..65535 -> 0..255), like every other image.
"""

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from proj.data.base import ArrayDataModule
from proj.data.errors import DataError
from proj.data.targets import as_names, check_class_names

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
# PIL's modes of more than 8 bits per pixel: 16-bit PNGs open as "I;16" (or "I", 32-bit integers holding
# 0..65535). Its convert("L") clips them at 255 instead of scaling, which turns nearly every pixel white.
WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def visible(path: Path) -> bool:
    return not path.name.startswith(".")


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if visible(p) and p.is_file() and p.suffix.lower() in EXTENSIONS)


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


def refuse_empty_classes(root: Path, classes: list[str], files: list[tuple[Path, int]]) -> None:
    """Two classes or more, each with an image."""
    counts = np.bincount([label for _, label in files], minlength=len(classes))
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
        **kwargs: Any,
    ) -> None:
        """predict_root: a folder of new images (no class sub-folders) for `predict`.
        classes: the class sub-folders, in the order of the model's outputs (null: those found, sorted). A run's
        config.yaml names them, so that the run predicts `predict_root` without its training folder."""
        self.root = Path(root)
        self.predict_root = Path(predict_root) if predict_root else None
        if len(image_size) != 2 or min(image_size) < 1:
            raise DataError(f"data.image_size={list(image_size)}: give [height, width], both at least 1 pixel")
        classes = as_names(classes)
        check_class_names(classes)
        if self.root.is_dir():
            self.classes = class_folders(self.root, classes)
            self.files = [(p, label) for label, name in enumerate(self.classes) for p in image_files(self.root / name)]
            refuse_empty_classes(self.root, self.classes, self.files)
        elif self.predict_root and classes:  # as a run's config.yaml gives them: see predict_only.py
            self.predicting_only = f"data.root={str(self.root)!r} is not a directory"
            self.classes, self.files = list(classes), []
        else:
            raise DataError(f"data.root={str(self.root)!r} is not a directory of class sub-folders")
        self.image_size = tuple(image_size)
        self.mode = "L" if grayscale else "RGB"
        self.num_classes = len(self.classes)
        self.input_shape = (1 if grayscale else 3, *self.image_size)
        super().__init__(**kwargs)

    def found_init_args(self) -> dict[str, Any]:
        """Written into the run's config.yaml: the class folders, in the order of the model's outputs."""
        return {"classes": self.classes}

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        x = self.read_images([path for path, _ in self.files])
        return x, np.array([label for _, label in self.files], dtype=np.int64)

    def sample_id(self, index: int) -> str:
        return str(self.files[index][0])

    def load_predict_arrays(self) -> tuple[np.ndarray, list[str]] | None:
        if self.predict_root is None:
            return None
        if not self.predict_root.is_dir():
            raise DataError(f"data.predict_root={str(self.predict_root)!r} is not a directory of images")
        paths = image_files(self.predict_root)
        if not paths:
            raise DataError(f"data.predict_root={str(self.predict_root)!r} holds no image ({', '.join(EXTENSIONS)})")
        return self.read_images(paths), [str(p) for p in paths]

    def read_images(self, paths: list[Path]) -> np.ndarray:
        images, bad = [], []
        height, width = self.image_size
        for path in paths:
            try:
                with Image.open(path) as im:
                    images.append(np.asarray(to_8bit(im).convert(self.mode).resize((width, height), Image.BILINEAR)))
            except (OSError, ValueError) as err:  # PIL raises these for truncated or non-image files
                bad.append(f"  {path}: {err}")
        if bad:
            raise DataError(
                f"{len(bad)} image file(s) cannot be read (replace or remove them):\n" + "\n".join(bad[:20])
            )
        x = np.stack(images)
        return x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)  # to (N, C, H, W)


def to_8bit(im: Image.Image) -> Image.Image:
    """A 16-bit grayscale image as 8-bit grayscale, scaled (65535 -> 255); other images unchanged."""
    if im.mode not in WIDE_MODES:
        return im
    values = np.asarray(im, dtype=np.float64)
    return Image.fromarray(np.clip(np.round(values / 257.0), 0, 255).astype(np.uint8))  # 2-D uint8: mode "L"
