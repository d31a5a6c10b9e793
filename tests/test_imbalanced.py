"""Imbalanced classes: on the embedded imbalanced digits, oversampling and class weights each raise macro recall
above no correction; on the imbalanced breast-cancer table, SMOTE adds synthetic minority rows to the training
split only, seeded, and is refused for images; GAN oversampling (ctgan) likewise, its rows inside the training range."""

import sys

import pytest
import torch

from proj.data import CSVDataModule, DataError, gan_oversampling
from proj.data.gan_oversampling import draw_rows
from proj.data.imbalanced_table import write_imbalanced_table
from proj.data.resampling import rows_to_add
from proj.data.sequence_data import refuse_image_options

from conftest import CONFIGS, DEFAULT, QUICK, cli, usage_error

pytestmark = pytest.mark.xdist_group("imbalanced_table")  # the module-scoped table is written once, on one worker


def macro_recall(experiment: str) -> float:
    result = cli(
        "fit",
        "--config",
        DEFAULT,
        "--config",
        str(CONFIGS / "experiment" / f"imbalanced_{experiment}.yaml"),
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    )
    return float(result.trainer.callback_metrics["test/recall"])  # on the full, balanced test split


@pytest.mark.slow
def test_oversampling_and_class_weights_beat_no_correction(in_tmp):
    baseline = macro_recall("none")
    oversampled = macro_recall("oversample")
    weighted = macro_recall("class_weights")
    print(f"macro recall: none {baseline:.3f}, oversample {oversampled:.3f}, class weights {weighted:.3f}")
    assert oversampled > baseline + 0.1
    assert weighted > baseline + 0.1


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> str:
    """The imbalanced table of configs/data/imbalanced_table.yaml: 21 malignant rows, 357 benign."""
    return str(write_imbalanced_table(str(tmp_path_factory.mktemp("table") / "imbalanced_table.csv")))


def table_module(table: str, **kwargs) -> CSVDataModule:
    dm = CSVDataModule(path=table, target="diagnosis", val_fraction=0.1, test_fraction=0.3, **kwargs)
    dm.setup()
    return dm


def balanced_training_split(plain: CSVDataModule, resampled: CSVDataModule) -> tuple[torch.Tensor, ...]:
    """The real training rows and the resampled split (x, y), checked: validation and test untouched, the real rows
    first, every class as large as the largest, the statistics those of the real rows."""
    for split in ("val", "test"):  # untouched: the same real rows
        (px, py), (rx, ry) = plain.splits[split].tensors, resampled.splits[split].tensors
        assert torch.equal(px, rx) and torch.equal(py, ry)
    real_x, real_y = plain.splits["train"].tensors
    x, y = resampled.splits["train"].tensors
    assert torch.equal(x[: len(real_x)], real_x) and torch.equal(y[: len(real_y)], real_y)  # real rows first
    counts = torch.bincount(y).tolist()
    assert counts[0] == counts[1] == int(torch.bincount(real_y).max())  # every class as large as the largest
    assert resampled.stats == plain.stats  # standardisation and imputation fitted on the real training rows only
    return real_x, real_y, x, y


def test_smote_balances_the_training_split_only(table):
    plain, smote = table_module(table), table_module(table, sampler="smote")
    real_x, real_y, x, y = balanced_training_split(plain, smote)
    minority = smote.classes.index("malignant")
    assert set(y[len(real_y) :].tolist()) == {minority}
    new, members = x[len(real_x) :], real_x[real_y == minority]
    assert (new >= members.min(0).values - 1e-4).all() and (new <= members.max(0).values + 1e-4).all()
    ids = smote.sample_ids("train")
    assert len(ids) == len(y) and ids[-1] == f"synthetic:{len(y) - len(real_y) - 1}"


def test_smote_rows_follow_the_split_seed(table):
    synthetic = [table_module(table, sampler="smote", split_seed=s).splits["train"].tensors[0] for s in (0, 0, 1)]
    assert torch.equal(synthetic[0], synthetic[1])
    assert synthetic[0].shape != synthetic[2].shape or not torch.equal(synthetic[0], synthetic[2])


def test_smote_names_the_class_with_too_few_rows(table):
    with pytest.raises(DataError, match=r"class 'malignant' has \d+ training row.*smote_neighbors to at most"):
        table_module(table, sampler="smote", smote_neighbors=20)


def test_smote_is_refused_for_images(capsys, in_tmp):
    line = usage_error(capsys, "fit", "--config", DEFAULT, *QUICK, "--data.init_args.sampler=smote")
    assert "data.sampler=smote" in line and "blurred non-images" in line and "oversample" in line


def test_a_fit_with_smote_trains(table, in_tmp):
    result = cli(
        "fit", "--config", DEFAULT, "--config", str(CONFIGS / "experiment" / "table_smote.yaml"), *QUICK,
        f"--data.init_args.path={table}", "--trainer.limit_train_batches=8",
        "--model.init_args.optim.stages=[{optimizer: {class_path: torch.optim.AdamW, init_args: {lr: 0.01}}}]",
    )  # fmt: skip
    labels = result.datamodule.splits["train"].tensors[1]
    assert len(set(torch.bincount(labels).tolist())) == 1  # the run trained on the balanced split
    assert float(result.trainer.callback_metrics["test/recall"]) > 0.6  # chance is 0.5


# Two of the 30 columns and two GAN epochs: ctgan fits a mixture per column first (~0.2 s each), so the whole table
# would cost seconds per GAN before it trains; what is checked here does not depend on the width or the quality.
TINY_GAN = {"features": ["mean_radius", "worst_concave_points"], "gan_epochs": 2, "gan_batch_size": 50}


def test_gan_rows_balance_the_minority_class_inside_the_training_range_seeded(table, monkeypatch):
    plain = table_module(table, features=TINY_GAN["features"])
    gan = table_module(table, sampler="gan", **TINY_GAN)
    real_x, real_y, x, y = balanced_training_split(plain, gan)
    assert set(y[len(real_y) :].tolist()) == {gan.classes.index("malignant")}  # the minority class only
    new = x[len(real_x) :]
    assert (new >= real_x.min(0).values).all() and (new <= real_x.max(0).values).all()
    assert len(torch.unique(new, dim=0)) > len(new) // 2  # written rows, not copies of a few
    assert len(gan.train_dataloader().sampler) == len(y)  # served like an unresampled split, once per epoch
    settings = (rows_to_add(real_y), TINY_GAN["gan_epochs"], TINY_GAN["gan_batch_size"])
    again, other = (draw_rows(real_x, real_y, *settings, seed=s, classes=())[0] for s in (0, 1))  # split_seed 0
    assert torch.equal(new, again) and not torch.equal(new, other)
    monkeypatch.setattr(gan_oversampling, "fit_gan", None)  # a resume's rebuild in this process trains no GAN
    gan.load_state_dict(gan.state_dict())
    assert torch.equal(gan.splits["train"].tensors[0], x)


def test_gan_refusals_are_one_line_before_training(table, capsys, in_tmp, monkeypatch):
    line = usage_error(capsys, "fit", "--config", DEFAULT, *QUICK, "--data.init_args.sampler=gan")  # digits
    assert "data.sampler=gan trains a GAN on table rows" in line and "images" in line and "oversample" in line
    with pytest.raises(DataError, match=r"data.sampler='gan' writes feature vectors, not sequences"):
        refuse_image_options({"sampler": "gan"})
    with pytest.raises(DataError, match=r"data.gan_batch_size=25 must be a positive multiple of 10"):
        table_module(table, sampler="gan", gan_batch_size=25)
    monkeypatch.setitem(sys.modules, "ctgan", None)  # as if it were not installed
    with pytest.raises(DataError, match=r'needs the ctgan package: pip install -c constraints.txt -e "\.\[gan\]"'):
        table_module(table, sampler="gan")
