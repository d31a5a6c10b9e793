"""CIFAR-10 and CIFAR-100 from the standard python-pickle folders (read locally, never downloaded).

    <root>/cifar-10-batches-py/{data_batch_1..5, test_batch}
    <root>/cifar-100-python/{train, test}

The official test set is the test split; validation is carved out of the training batches (stratified).
"""

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from proj.data.base import ArrayDataModule

# The label names of the official meta files (batches.meta label_names, meta fine_label_names), in label order.
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle", "bowl", "boy",
    "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest",
    "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion", "lizard",
    "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange", "orchid",
    "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine", "possum",
    "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper",
    "snail", "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone",
    "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf",
    "woman", "worm",
)  # fmt: skip


class CIFAR10DataModule(ArrayDataModule):
    num_classes = 10
    input_shape = (3, 32, 32)
    scale = 1.0 / 255.0
    folder = "cifar-10-batches-py"
    url = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    train_files = tuple(f"data_batch_{i}" for i in range(1, 6))
    test_files = ("test_batch",)
    label_key = b"labels"
    label_names = CIFAR10_CLASSES

    def __init__(self, root: str = "data", **kwargs: Any) -> None:
        self.root = Path(root)
        self.classes = self.label_names
        super().__init__(**kwargs)

    def prepare_data(self) -> None:
        self.paths(self.train_files + self.test_files)  # fail before training if a file is missing

    def paths(self, names: tuple[str, ...]) -> list[Path]:
        folder = self.root / self.folder
        missing = [name for name in names if not (folder / name).is_file()]
        if missing:
            raise FileNotFoundError(
                f"{type(self).__name__}: {folder} lacks {', '.join(missing)}. Download {self.url} and extract it "
                f"into {self.root} (it creates {self.folder}/), or set data.init_args.root to where it is."
            )
        return [folder / name for name in names]

    def read(self, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for path in self.paths(names):
            with open(path, "rb") as f:
                # The official format is a pickle: load only files you obtained from the CIFAR site.
                batch = pickle.load(f, encoding="bytes")
            xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, *self.input_shape))
            ys.append(np.asarray(batch[self.label_key], dtype=np.int64))
        return np.concatenate(xs), np.concatenate(ys)

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return self.read(self.train_files)

    def load_test_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return self.read(self.test_files)


class CIFAR100DataModule(CIFAR10DataModule):
    num_classes = 100
    folder = "cifar-100-python"
    url = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
    train_files = ("train",)
    test_files = ("test",)
    label_key = b"fine_labels"
    label_names = CIFAR100_CLASSES
