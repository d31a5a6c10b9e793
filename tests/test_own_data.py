"""Your own data module and your own batch: a plain LightningDataModule written here, over a torch Dataset that
returns dicts with an id, meets the data contract (proj.data.contract) in three attributes and trains, tests and
predicts with the default config's callbacks on; predictions.csv carries the dataset's own ids. A data module that
breaks the contract, or dict batches read with the wrong keys, are one line naming what to fix."""

import csv
from pathlib import Path

import lightning.pytorch as L
import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader, Dataset

from conftest import DEFAULT, cli, usage_error

pytestmark = pytest.mark.slow

KEYS = "--model.init_args.batch_keys={input: image, target: label, id: name}"
FIT = ["fit", "--config", DEFAULT, "--data=test_own_data.DictDigits", KEYS, "--trainer.enable_progress_bar=false"]


class DigitDicts(Dataset):
    """scikit-learn's digits as dicts: {"image": (1, 8, 8) in [0, 1], "label": the digit, "name": an id of its own}."""

    def __init__(self, indices: np.ndarray) -> None:
        digits = load_digits()
        self.images = torch.tensor(digits.images[indices] / 16, dtype=torch.float32)[:, None]
        self.labels = torch.tensor(digits.target[indices])
        self.names = [f"digit-{i:04d}" for i in indices]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "label": self.labels[i], "name": self.names[i]}


class DictDigits(L.LightningDataModule):
    """The data contract's three attributes; everything else is plain Lightning."""

    num_outputs = 10
    input_shape = (1, 8, 8)
    targets = {"task": "classification", "classes": [str(i) for i in range(10)]}

    def __init__(self, batch_size: int = 64) -> None:
        super().__init__()
        self.batch_size = batch_size

    def setup(self, stage: str | None = None) -> None:
        order = np.random.default_rng(0).permutation(1797)
        self.parts = {"train": order[:1200], "val": order[1200:1400], "test": order[1400:]}

    def loader(self, part: str, shuffle: bool = False) -> DataLoader:
        return DataLoader(DigitDicts(self.parts[part]), batch_size=self.batch_size, shuffle=shuffle)

    def train_dataloader(self) -> DataLoader:
        return self.loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader("val")

    def test_dataloader(self) -> DataLoader:
        return self.loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self.loader("test")


class NoOutputs(DictDigits):
    num_outputs = None


def test_a_dict_batch_data_module_trains_tests_and_predicts_with_its_own_ids(in_tmp):
    result = cli(*FIT, "--trainer.max_epochs=4")
    accuracy = float(result.trainer.callback_metrics["test/acc"])
    assert accuracy > 0.9, accuracy  # ten classes: chance is 0.1
    run = Path(result.trainer.log_dir)
    images = set()
    for events in run.glob("events.out.tfevents.*"):  # the default callbacks read the dict batches too
        images |= set(EventAccumulator(str(events), size_guidance={"images": 0}).Reload().Tags()["images"])
    assert {"train/augmented_samples", "val/confusion_matrix"} <= images

    best = result.trainer.checkpoint_callback.best_model_path
    cli("predict", "--config", str(run / "config.yaml"), f"--ckpt_path={best}", "--trainer.enable_progress_bar=false")
    with open(run / "predict" / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    test = result.datamodule.parts["test"]
    assert [r["id"] for r in rows] == [f"digit-{i:04d}" for i in test]  # the dataset's ids, in its order
    labels = load_digits().target
    right = np.mean([int(r["predicted"]) == labels[int(r["id"].removeprefix("digit-"))] for r in rows])
    assert right == pytest.approx(accuracy, abs=1e-6)  # the same model as the test, row by row


class NoShape(DictDigits):
    input_shape = None


class TextOutputs(DictDigits):
    num_outputs = "10"


class ShapeOfWords(DictDigits):
    input_shape = "1x8x8"


class WrongShape(DictDigits):
    input_shape = (64,)  # the pixels of an 8x8 image, but the batches hold (1, 8, 8) images


class ListTargets(DictDigits):
    targets = ["0", "1"]


CONTRACT = [  # (data module, the line that must be all the error says)
    ("NoOutputs", "data NoOutputs has no num_outputs (the model's outputs: the number of classes, or of regression"),
    ("NoShape", "data NoShape has no input_shape (one sample's shape, without the batch axis"),
    ("TextOutputs", "data TextOutputs.num_outputs is '10': give a whole number of at least 1"),
    ("ShapeOfWords", "data ShapeOfWords.input_shape is '1x8x8': give a tuple of sizes, each a whole number"),
    ("ListTargets", "data ListTargets.targets is ['0', '1']: give a dict"),
]


@pytest.mark.parametrize(("data", "line"), CONTRACT, ids=[c[0] for c in CONTRACT])
def test_a_data_module_that_breaks_the_contract_is_one_line_naming_the_attribute_and_the_page(
    in_tmp, capsys, data, line
):
    error = usage_error(capsys, *FIT[:3], f"--data=test_own_data.{data}", KEYS)
    assert error.startswith(f"python -m proj fit: error: {line}"), error  # nothing of the link's plumbing
    assert "the contract is docs/data_contract.md" in error
    assert not (in_tmp / "logs").exists()


def test_an_input_shape_other_than_the_batches_is_one_line_naming_both(in_tmp, capsys):
    error = usage_error(capsys, *FIT[:3], "--data=test_own_data.WrongShape", KEYS, "--trainer.max_epochs=1")
    assert "one sample [1, 8, 8], but the data module's input_shape is [64]" in error


def test_dict_batches_read_with_the_wrong_keys_are_one_line_naming_batch_keys(in_tmp, capsys):
    error = usage_error(capsys, *FIT[:4], "--trainer.max_epochs=1")  # no batch_keys: the default "input"
    assert "batch_keys" in error and "'image'" in error
