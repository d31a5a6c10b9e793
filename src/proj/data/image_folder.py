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

    def __init__(
        self,
        root: str,
        image_size: tuple[int, int] = (32, 32),
        grayscale: bool = False,
        predict_root: str | None = None,
        **kwargs: Any,
    ) -> None:
        """predict_root: a folder of new images (no class sub-folders) for `predict`."""
        self.root = Path(root)
        self.predict_root = Path(predict_root) if predict_root else None
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
        x = self.read_images([path for path, _ in self.files])
        return x, np.array([label for _, label in self.files], dtype=np.int64)

    def sample_id(self, index: int) -> str:
        return str(self.files[index][0])

    def load_predict_arrays(self) -> tuple[np.ndarray, list[str]] | None:
        if self.predict_root is None:
            return None
        if not self.predict_root.is_dir():
            raise FileNotFoundError(f"data.predict_root={str(self.predict_root)!r} is not a directory of images")
        paths = sorted(p for p in self.predict_root.iterdir() if p.suffix.lower() in EXTENSIONS)
        if not paths:
            raise ValueError(f"data.predict_root={str(self.predict_root)!r} holds no image ({', '.join(EXTENSIONS)})")
        return self.read_images(paths), [str(p) for p in paths]

    def read_images(self, paths: list[Path]) -> np.ndarray:
        images, bad = [], []
        height, width = self.image_size
        for path in paths:
            try:
                with Image.open(path) as im:
                    images.append(np.asarray(im.convert(self.mode).resize((width, height), Image.BILINEAR)))
            except (OSError, ValueError) as err:  # PIL raises these for truncated or non-image files
                bad.append(f"  {path}: {err}")
        if bad:
            raise ValueError(f"{len(bad)} image file(s) cannot be read:\n" + "\n".join(bad[:20]))
        x = np.stack(images)
        return x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)  # to (N, C, H, W)
