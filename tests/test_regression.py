"""Regression through the same core as classification: the diabetes experiment against scikit-learn's
RidgeCV, its target statistics, and predict on it (the extras' tests cover export, views, tune, cv, lr_find)."""

import csv

import numpy as np
import pytest
import torch

from conftest import CONFIGS, DEFAULT, cli

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("regression_run")]  # one worker trains it

EXPERIMENT = str(CONFIGS / "experiment" / "diabetes_regression.yaml")
ARGS = ["--config", DEFAULT, "--config", EXPERIMENT, "--trainer.enable_progress_bar=false"]
SHORT = ["--trainer.max_epochs=3", "--trainer.limit_train_batches=4", "--trainer.enable_model_summary=false"]


@pytest.fixture
def diabetes(diabetes_run):
    """The session's full fit of the diabetes experiment (conftest.diabetes_run): (result, run dir, best)."""
    return diabetes_run


def split_arrays(dm, split):
    x, y = dm.splits[split].tensors
    return x.numpy().reshape(len(x), -1), y.numpy()


def test_r2_reaches_ridge_on_the_same_split(diabetes):
    from sklearn.linear_model import RidgeCV
    from sklearn.metrics import r2_score

    result, _, _ = diabetes
    dm = result.datamodule
    (x_train, y_train), (x_test, y_test) = split_arrays(dm, "train"), split_arrays(dm, "test")
    ridge = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(x_train, y_train)  # raw features: Ridge scales itself
    ridge_r2 = r2_score(y_test, ridge.predict(x_test))
    r2 = float(result.trainer.callback_metrics["test/r2"])
    print(f"diabetes test R^2: Regressor {r2:.4f}, RidgeCV {ridge_r2:.4f}")
    assert r2 >= ridge_r2 - 0.02
    # the metrics are in the target's units (disease progression, 25 to 346), not standardised ones
    assert 30 < float(result.trainer.callback_metrics["test/mae"]) < 80


def test_target_statistics_come_from_the_training_split_and_travel_in_the_checkpoint(diabetes):
    result, _, best = diabetes
    _, y_train = split_arrays(result.datamodule, "train")
    state = torch.load(best, weights_only=True)["state_dict"]
    assert float(state["target_mean"]) == pytest.approx(y_train.mean(), rel=1e-5)
    assert float(state["target_std"]) == pytest.approx(y_train.std(), rel=1e-4)


def test_predictions_are_values_in_the_target_units_with_row_indices(diabetes, tmp_path, monkeypatch):
    result, run_dir, best = diabetes
    monkeypatch.chdir(tmp_path)
    args = ["--config", str(run_dir / "config.yaml"), f"--ckpt_path={best}", "--trainer.enable_progress_bar=false"]
    cli("predict", *args)
    with open(run_dir / "predict" / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["id", "progression"]
    from sklearn.datasets import load_diabetes

    target = load_diabetes().target
    ids = [int(r["id"]) for r in rows]
    predicted = np.array([float(r["progression"]) for r in rows])
    assert sorted(ids) == sorted(result.datamodule.indices["test"].tolist())  # row indices in the dataset
    rmse = float(np.sqrt(np.mean((predicted - target[ids]) ** 2)))
    tested = cli("test", *args)
    assert rmse == pytest.approx(float(tested.trainer.callback_metrics["test/rmse"]), rel=1e-4)
