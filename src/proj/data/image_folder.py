"""Images in one sub-folder per class (PNG / JPEG, read with PIL), resized to one size and held in memory.

    <root>/cat/001.png, <root>/dog/xyz.jpg, ...     class names are the sorted folder names

Every file is decoded in `setup`, so an unreadable or corrupt one is reported by path before training.
"""

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from proj.data.base import ArrayDataModule

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


class ImageFolderDataModule(ArrayDataModule):
    scale = 1.0 / 255.0

    def __init__(self, root: str, image_size: tuple[int, int] = (32, 32), grayscale: bool = False, **kwargs: Any):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"data.root={str(self.root)!r} is not a directory of class sub-folders")
        self.classes = sorted(d.name for d in self.root.iterdir() if d.is_dir())
        self.files = [
            (path, label)
            for label, name in enumerate(self.classes)
            for path in sorted((self.root / name).iterdir())
            if path.suffix.lower() in EXTENSIONS
        ]
        counts = np.bincount([label for _, label in self.files], minlength=len(self.classes))
        empty = [name for name, n in zip(self.classes, counts, strict=True) if n == 0]
        if len(self.classes) < 2 or empty:
            raise ValueError(
                f"data.root={str(self.root)!r} needs two or more class sub-folders with images "
                f"({', '.join(EXTENSIONS)}); found classes {self.classes}, empty: {empty}"
            )
        self.image_size = tuple(image_size)
        self.mode = "L" if grayscale else "RGB"
        self.num_classes = len(self.classes)
        self.input_shape = (1 if grayscale else 3, *self.image_size)
        super().__init__(**kwargs)

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        images, bad = [], []
        height, width = self.image_size
        for path, _ in self.files:
            try:
                with Image.open(path) as im:
                    images.append(np.asarray(im.convert(self.mode).resize((width, height), Image.BILINEAR)))
            except (OSError, ValueError) as err:  # PIL raises these for truncated or non-image files
                bad.append(f"  {path}: {err}")
        if bad:
            raise ValueError(f"{len(bad)} image file(s) under {self.root} cannot be read:\n" + "\n".join(bad[:20]))
        x = np.stack(images)
        x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)  # to (N, C, H, W)
        return x, np.array([label for _, label in self.files], dtype=np.int64)
