"""Task-aware data: regression (diabetes, a numeric CSV target) beside classification, which stays stratified."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_diabetes, load_digits

from proj.data import CIFAR10DataModule, CIFAR100DataModule, CSVDataModule, DiabetesDataModule, DigitsDataModule


@pytest.fixture(scope="module")
def diabetes() -> DiabetesDataModule:
    dm = DiabetesDataModule(val_fraction=0.15, test_fraction=0.2)
    dm.setup()
    return dm


def write_csv(path, rows: list[str]):
    path.write_text("\n".join(["a,b,y", *rows]) + "\n")
    return path


# --- regression: diabetes ---------------------------------------------------------------------------------


def test_diabetes_splits_are_disjoint_complete_and_deterministic(diabetes):
    sizes = {k: len(v) for k, v in diabetes.indices.items()}
    assert sum(sizes.values()) == 442
    assert abs(sizes["test"] - 442 * 0.2) <= 1 and abs(sizes["val"] - 442 * 0.15) <= 1
    everything = torch.cat(list(diabetes.indices.values()))
    assert len(set(everything.tolist())) == 442
    other = DiabetesDataModule(val_fraction=0.15, test_fraction=0.2)
    other.setup()
    assert all(torch.equal(diabetes.indices[k], other.indices[k]) for k in ("train", "val", "test"))
    reseeded = DiabetesDataModule(split_seed=1, val_fraction=0.15, test_fraction=0.2)
    reseeded.setup()
    assert not torch.equal(diabetes.indices["test"], reseeded.indices["test"])


def test_diabetes_targets_are_raw_floats_with_training_statistics(diabetes):
    data = load_diabetes(scaled=False)
    y = diabetes.splits["train"].tensors[1]
    assert y.dtype == torch.float32 and y.shape == (len(diabetes.indices["train"]),)
    np.testing.assert_array_equal(y.numpy(), data.target[diabetes.indices["train"].numpy()].astype(np.float32))
    train_y = data.target[diabetes.indices["train"].numpy()]
    stats = diabetes.target_stats
    assert stats == {"mean": [pytest.approx(train_y.mean())], "std": [pytest.approx(train_y.std())]}
    assert diabetes.stats["target_mean"] == stats["mean"] and diabetes.stats["target_std"] == stats["std"]
    assert diabetes.num_outputs == 1 and diabetes.classes == [] and diabetes.class_weights is None
    assert diabetes.target_names == ["progression"] and diabetes.input_shape == (10,)
    assert diabetes.features == list(data.feature_names)
    x, yb = diabetes.on_after_batch_transfer(next(iter(diabetes.val_dataloader())), 0)
    assert yb.min() >= 25 and yb.max() <= 346  # raw values in the batches: the model standardises
    assert abs(x.mean().item()) < 0.5  # features are standardised
    assert diabetes.sample_ids("test")[0] == str(int(diabetes.indices["test"][0]))


def test_target_statistics_travel_with_the_state_dict(diabetes):
    saved = diabetes.state_dict()
    other = DiabetesDataModule(split_seed=3)
    assert other.target_stats != diabetes.target_stats
    other.load_state_dict(saved)
    assert other.target_stats == diabetes.target_stats
    fresh = DiabetesDataModule(split_seed=5)
    fresh.load_state_dict(saved)  # before setup, as on resume: setup keeps the saved statistics
    assert fresh.target_stats == diabetes.target_stats


def test_regression_cv_folds_are_disjoint_and_cover_the_data():
    tests = []
    for k in range(4):
        dm = DiabetesDataModule(cv_folds=4, cv_fold=k)
        dm.setup()
        split = dm.indices
        assert sum(len(v) for v in split.values()) == 442
        assert len(set(torch.cat(list(split.values())).tolist())) == 442
        tests.append(set(split["test"].tolist()))
    assert set().union(*tests) == set(range(442))
    assert sum(len(t) for t in tests) == 442


def test_multi_target_regression_keeps_two_columns():
    class TwoTargets(DiabetesDataModule):
        target_names = ["progression", "double"]

        def load_arrays(self):
            x, y = super().load_arrays()
            return x, np.stack([y, 2 * y], 1)

    dm = TwoTargets()
    dm.setup()
    assert dm.splits["train"].tensors[1].shape == (len(dm.indices["train"]), 2)
    assert dm.num_outputs == 2
    mean, std = dm.target_stats["mean"], dm.target_stats["std"]
    assert mean[1] == pytest.approx(2 * mean[0]) and std[1] == pytest.approx(2 * std[0])


# --- regression: refused options --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, key",
    [
        ({"sampler": "oversample"}, "data.sampler='oversample'"),
        ({"sampler": "balanced"}, "set sampler: none"),
        ({"class_weights": "balanced"}, "data.class_weights='balanced'"),
        ({"class_weights": [1.0, 2.0]}, "set class_weights: none"),
        ({"mixup_alpha": 0.2}, "data.mixup_alpha=0.2"),
        ({"cutmix_alpha": 1.0}, "set cutmix_alpha: 0"),
    ],
)
def test_regression_refuses_class_options_naming_the_key(options, key):
    with pytest.raises(ValueError, match="the task is regression") as err:
        DiabetesDataModule(**options)
    assert key in str(err.value)


# --- regression: CSV --------------------------------------------------------------------------------------


def test_csv_regression_reads_numeric_targets(tmp_path):
    path = write_csv(tmp_path / "t.csv", [f"{i},{i % 3},{0.5 * i + 1}" for i in range(40)])
    dm = CSVDataModule(path=str(path), target="y", task="regression", impute="median")
    dm.setup()
    assert dm.task == "regression" and dm.classes == [] and dm.num_outputs == 1 and dm.target_names == ["y"]
    y = torch.cat([dm.splits[k].tensors[1] for k in ("train", "val", "test")])
    assert y.dtype == torch.float32 and sorted(y.tolist()) == [0.5 * i + 1 for i in range(40)]
    train_y = dm.splits["train"].tensors[1].double().numpy()
    assert dm.target_stats["mean"] == [pytest.approx(train_y.mean())]
    assert dm.hparams.task == "regression"


@pytest.mark.parametrize("bad, message", [("abc", "holds 'abc', not a number"), ("", "is missing")])
def test_csv_regression_names_the_line_and_column_of_a_bad_target(tmp_path, bad, message):
    path = write_csv(tmp_path / "t.csv", ["1,2,3.5", f"4,5,{bad}"])
    with pytest.raises(ValueError, match=message) as err:
        CSVDataModule(path=str(path), target="y", task="regression")
    assert f"{path}:3" in str(err.value) and "'y'" in str(err.value)


def test_csv_classification_is_unchanged(tmp_path):
    path = write_csv(tmp_path / "t.csv", [f"{i},{i % 3},{'cat' if i % 2 else 'dog'}" for i in range(40)])
    dm = CSVDataModule(path=str(path), target="y")
    dm.setup()
    assert dm.classes == ["cat", "dog"] and dm.num_classes == dm.num_outputs == 2 and dm.target_stats is None
    assert dm.splits["train"].tensors[1].dtype == torch.long
    assert "target_mean" not in dm.stats


def test_a_class_of_one_row_is_named_before_sklearn_complains(tmp_path):
    path = write_csv(tmp_path / "t.csv", [f"{i},{i},{'cat' if i else 'lonely'}" for i in range(20)])
    with pytest.raises(ValueError, match=r"class 'lonely' \(1 row\).*at least 2 rows"):
        CSVDataModule(path=str(path), target="y").setup()


# --- classification stays as it was -------------------------------------------------------------------------


def test_digits_splits_are_still_stratified():
    dm = DigitsDataModule()
    dm.setup()
    y = load_digits().target
    assert dm.splits["train"].tensors[1].dtype == torch.long
    assert sum(len(v) for v in dm.indices.values()) == len(y)
    for name in ("test", "val"):
        part = y[dm.indices[name].numpy()]
        for c in range(10):
            assert abs((part == c).sum() - (y == c).sum() * len(part) / len(y)) <= 1
    assert dm.classes == [str(c) for c in range(10)] and dm.num_outputs == dm.num_classes == 10
    assert dm.target_stats is None and dm.target_names == []
    assert "target_mean" not in dm.stats


def test_cifar_names_its_classes():
    assert CIFAR10DataModule().classes[:3] == ["airplane", "automobile", "bird"]
    names = CIFAR100DataModule().classes
    assert len(names) == len(set(names)) == 100 and names[0] == "apple" and names[-1] == "worm"


def test_csv_classes_given_as_numbers_set_the_output_order(tmp_path):
    """YAML reads `classes: [10, 2, 1]` as numbers; the labels of the file are text. Once a garbled type error."""
    path = write_csv(tmp_path / "t.csv", [f"{i},{i % 3},{(1, 2, 10)[i % 3]}" for i in range(30)])
    dm = CSVDataModule(path=str(path), target="y", classes=[10, 2, 1])
    dm.setup()
    assert dm.classes == ["10", "2", "1"]
    x, y = (torch.cat([dm.splits[k].tensors[i] for k in ("train", "val", "test")]) for i in (0, 1))
    labels = {int(row[0]): dm.classes[int(label)] for row, label in zip(x, y, strict=True)}
    assert all(labels[i] == str((1, 2, 10)[i % 3]) for i in labels)  # row i's label, read back through the order


def test_csv_columns_outside_the_features_are_named_once(tmp_path, caplog):
    """A run's config.yaml lists its feature columns: a column added to the file since is left out, and said so."""
    path = write_csv(tmp_path / "t.csv", [f"{i},{i % 3},{'ab'[i % 2]}" for i in range(20)])
    with caplog.at_level("INFO"):
        dm = CSVDataModule(path=str(path), target="y", features=["a"])
    assert dm.input_shape == (1,) and "has columns outside data.features, left out: b" in caplog.text
