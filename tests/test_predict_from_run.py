"""A run predicts new samples from its run directory alone: its config.yaml holds what the data was found to have
(a CSV's feature columns, the classes), its checkpoint the statistics. Predicting once needed the training data
(`data.path='train.csv' does not exist`), so a run moved to another machine could not predict."""

import csv
import shutil

import pytest
from PIL import Image
from sklearn.datasets import load_diabetes, load_wine

from conftest import DEFAULT, QUICK, cli, usage_error

NO_BAR = ["--trainer.enable_progress_bar=false"]
CSV = ["--model.init_args.net=proj.nets.MLP", "--data=proj.data.CSVDataModule", "--data.path=train.csv"]


def tables(folder, load):
    """train.csv, and new.csv: five of its rows without the target, columns reversed, one value missing (imputed
    with the training split's median, as the checkpoint saved it)."""
    data = load()
    names = [n.replace("/", "_") for n in data.feature_names]
    rows = [[*map(float, x), t] for x, t in zip(data.data, data.target, strict=True)]
    with open(folder / "train.csv", "w", newline="") as f:
        csv.writer(f).writerows([[*names, "target"], *rows])
    new = [list(reversed(row[:-1])) for row in rows[:5]]
    new[2][3] = ""
    with open(folder / "new.csv", "w", newline="") as f:
        csv.writer(f).writerows([list(reversed(names)), *new])
    return "new.csv", [f"new.csv:{i}" for i in range(2, 7)]


def images(folder):
    """imgs/<class>/*.png for three classes, and new/ with four images to predict."""
    for c, name in enumerate("abc"):
        (folder / "imgs" / name).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (8, 8), (80 * c, 40 * i, 0)).save(folder / "imgs" / name / f"{i}.png")
    (folder / "new").mkdir()
    for i in range(4):
        Image.new("RGB", (8, 8), (60 * i, 20, 0)).save(folder / "new" / f"n{i}.png")
    return "new", [str((folder / "new" / f"n{i}.png").relative_to(folder)) for i in range(4)]


CASES = {  # (writes the data and the new samples, options of the run, the option naming the new samples)
    # class_weights balanced: the weights are a buffer of the loss, restored from the checkpoint
    "csv_classification": (lambda f: tables(f, load_wine), [*CSV, "--data.target=target",
                           "--data.impute=median", "--data.class_weights=balanced"], "predict_path"),
    "csv_regression": (lambda f: tables(f, load_diabetes), [*CSV, "--data.target=target", "--data.impute=median",
                       "--data.task=regression", "--model=proj.models.Regressor"], "predict_path"),
    "image_folder": (images, ["--data=proj.data.ImageFolderDataModule", "--data.image_size=[8, 8]",
                     "--data.root=imgs", "--data.val_fraction=0.25", "--data.test_fraction=0.25"], "predict_root"),
}  # fmt: skip


def predict(run, option, new):
    cli("predict", "--config", str(run / "config.yaml"), f"--data.{option}={new}", *NO_BAR)
    return (run / "predict" / "predictions.csv").read_text().splitlines()


@pytest.mark.parametrize("case", CASES)
def test_a_run_predicts_new_samples_without_its_training_data(case, tmp_path, monkeypatch, capsys):
    make, options, option = CASES[case]
    trained, moved = tmp_path / "trained", tmp_path / "moved"
    trained.mkdir()
    new, ids = make(trained)
    monkeypatch.chdir(trained)
    cli("fit", "--config", DEFAULT, *options, *QUICK)
    beside_its_data = predict(trained / "logs" / "default" / "version_0", option, new)
    assert [line.split(",")[0] for line in beside_its_data[1:]] == ids

    shutil.copytree(trained / "logs", moved / "logs")  # the run directory and the new samples, without the data
    shutil.copytree(trained / new, moved / new) if (trained / new).is_dir() else shutil.copy(trained / new, moved)
    monkeypatch.chdir(moved)
    run = moved / "logs" / "default" / "version_0"
    assert predict(run, option, new) == beside_its_data

    error = usage_error(capsys, "test", "--config", str(run / "config.yaml"))  # testing needs the labelled data
    assert "does not exist" in error or "is not a directory" in error, error
    error = usage_error(capsys, "test", "--config", str(run / "config.yaml"), f"--data.{option}={new}")
    assert "test needs the training data" in error, error
