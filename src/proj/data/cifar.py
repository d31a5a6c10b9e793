"""CIFAR-10 and CIFAR-100 from the standard python-pickle folders (read locally, never downloaded).

    <root>/cifar-10-batches-py/{data_batch_1..5, test_batch}
    <root>/cifar-100-python/{train, test}

The official test set is the test split; validation is carved out of the training batches (stratified).
The batch files are pickles: they are read with an unpickler that builds numpy arrays and plain containers
only, so a file that holds anything else (code to run) is refused, and so is a truncated one, by its path.
"""

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from proj.data.base import ArrayDataModule
from proj.data.errors import DataError

# What a CIFAR batch pickle refers to: numpy's array reconstruction (numpy.core in files written by numpy 1,
# as the official ones, numpy._core by numpy 2; _frombuffer under pickle protocol 5) and, in files written by
# Python 3 with protocol 2, _codecs.encode for bytes. Nothing else is ever looked up.
ALLOWED_GLOBALS = {
    *((f"numpy.{core}.multiarray", name) for core in ("core", "_core") for name in ("_reconstruct", "scalar")),
    *((f"numpy.{core}.numeric", "_frombuffer") for core in ("core", "_core")),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}
NUMPY_2 = int(np.__version__.split(".")[0]) >= 2

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
            raise DataError(
                f"{type(self).__name__}: {folder} lacks {', '.join(missing)}. Download {self.url} and extract it "
                f"into {self.root} (it creates {self.folder}/), or set data.init_args.root to where it is."
            )
        return [folder / name for name in names]

    def read(self, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for path in self.paths(names):
            x, y = self.read_batch(path)
            xs.append(x)
            ys.append(y)
        return np.concatenate(xs), np.concatenate(ys)

    def read_batch(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        """One batch file: images (N, 3, 32, 32) uint8 and labels (N,), checked against the format."""
        fix = f"Download {self.url} again and extract it into {self.root}"
        try:
            with open(path, "rb") as f:
                batch = ArraysOnlyUnpickler(f, encoding="bytes").load()
        except Exception as err:  # truncated, corrupt or foreign: whatever the unpickler stumbles on
            raise DataError(f"{path} is not a readable CIFAR batch ({type(err).__name__}: {err}). {fix}") from None
        data, labels = (batch.get(key) if isinstance(batch, dict) else None for key in (b"data", self.label_key))
        if data is None or labels is None:
            raise DataError(f"{path} lacks the {b'data'!r} and {self.label_key!r} entries of a CIFAR batch. {fix}")
        data, labels = np.asarray(data), np.asarray(labels)
        size = int(np.prod(self.input_shape))
        if data.ndim != 2 or data.shape[1] != size or len(labels) != len(data) or labels.ndim != 1:
            raise DataError(
                f"{path}: data of shape {data.shape} and {labels.shape} labels; a CIFAR batch holds rows of "
                f"{size} values (3 x 32 x 32) and one label per row. {fix}"
            )
        bad = np.flatnonzero((labels < 0) | (labels >= self.num_classes))
        if len(bad):
            raise DataError(
                f"{path}: row {bad[0]} has label {labels[bad[0]]}, outside 0..{self.num_classes - 1} "
                f"({len(bad)} such row(s)). {fix}"
            )
        return data.astype(np.uint8).reshape(-1, *self.input_shape), labels.astype(np.int64)

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


class ArraysOnlyUnpickler(pickle.Unpickler):
    """Builds numpy arrays and plain containers (dict, list, bytes, numbers) only: any other global is refused,
    so a pickle payload in a data file cannot run."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"it refers to {module}.{name}; a CIFAR batch holds only numpy arrays and plain values, and "
                "unpickling anything else could run code"
            )
        if NUMPY_2 and module.startswith("numpy.core."):  # numpy 2 moved numpy.core to numpy._core
            module = "numpy._core." + module.removeprefix("numpy.core.")
        return super().find_class(module, name)
