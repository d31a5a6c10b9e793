"""Regression through the same core as classification: the diabetes experiment against scikit-learn's
RidgeCV, and predict / export / TensorBoard views / tune / cv / lr_find on it."""

import csv
import json

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import CONFIGS, DEFAULT, cli, cli_in

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("regression_run")]  # one worker trains it

EXPERIMENT = str(CONFIGS / "experiment" / "diabetes_regression.yaml")
ARGS = ["--config", DEFAULT, "--config", EXPERIMENT, "--trainer.enable_progress_bar=false"]
SHORT = ["--trainer.max_epochs=3", "--trainer.limit_train_batches=4", "--trainer.enable_model_summary=false"]


@pytest.fixture(scope="module")
def diabetes(tmp_path_factory):
    """One full fit of the diabetes experiment (tested on its best checkpoint), run in its own folder."""
    workdir = tmp_path_factory.mktemp("diabetes")
    result = cli_in(workdir, "fit", *ARGS)
    run_dir = workdir / "logs" / "diabetes_regression" / "version_0"
    best = workdir / result.trainer.checkpoint_callback.best_model_path
    return result, run_dir, str(best)


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


def test_onnx_export_bakes_in_the_target_scaling(diabetes, tmp_path, monkeypatch):
    import onnxruntime as ort

    result, run_dir, best = diabetes
    monkeypatch.chdir(tmp_path)
    info = cli("export", "--config", str(run_dir / "config.yaml"), f"--ckpt_path={best}", "--format=onnx")
    assert info["task"] == "regression" and info["target_names"] == ["progression"]
    assert info["max_abs_diff_vs_pytorch"] < 1e-3  # in the target's units (values up to ~300)
    session = ort.InferenceSession(str(run_dir / "export" / info["files"]["model"]), providers=["CPUExecutionProvider"])
    x, y = split_arrays(result.datamodule, "test")
    values = session.run(None, {"input": x.astype(np.float32)})[0]
    rmse = float(np.sqrt(np.mean((values[:, 0] - y) ** 2)))
    measured = json.loads((run_dir / "export" / "model.json").read_text())["measured"]
    assert measured["onnx fp32"]["test_rmse"] == pytest.approx(rmse, abs=1e-3)
    assert 30 < rmse < 90  # not standardised units: the scaling is inside the file


def test_tensorboard_shows_the_scatter_not_the_confusion_matrix(diabetes):
    _, run_dir, _ = diabetes
    images, scalars = set(), set()
    for f in run_dir.glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(f), size_guidance={"images": 0}).Reload()
        images |= set(acc.Tags()["images"])
        scalars |= set(acc.Tags()["scalars"])
    assert "val/predicted_vs_true" in images and "val/confusion_matrix" not in images
    assert {"val/rmse", "val/r2", "val/mae", "train/loss_epoch", "hp/val_rmse", "hp/test_r2"} <= scalars


SEARCH = """
tune:
  study_name: diabetes_hpo
  metric: val/rmse
  direction: minimize
  n_trials: 2
  pruner: none
  space:
    model.init_args.optim.stages.0.optimizer.init_args.lr: {type: float, low: 1.0e-3, high: 3.0e-2, log: true}
    model.init_args.net.init_args.dropout: {type: float, low: 0.0, high: 0.3}
"""


def test_tune_and_cv_optimise_a_regression_metric(in_tmp):
    (in_tmp / "search.yaml").write_text(SEARCH)
    study = cli("tune", *ARGS, "--config", str(in_tmp / "search.yaml"), *SHORT)
    assert len(study.trials) == 2 and all(np.isfinite(t.value) and t.value > 0 for t in study.trials)
    mlflow = str(CONFIGS / "logger" / "mlflow.yaml")  # a logger whose save_dir property is its run directory
    summary = cli("cv", *ARGS, "--config", mlflow, *SHORT, "--folds", "2")
    assert set(summary["mean"]) >= {"test/r2", "test/rmse", "test/mae", "test/loss"}
    # the folds land in logs/<name>_cv/ whatever the logger, as README says
    assert sorted(p.name for p in (in_tmp / "logs" / "diabetes_regression_cv").glob("fold_*")) == ["fold_0", "fold_1"]


def test_lr_find_on_the_regressor(in_tmp):
    found = cli("lr_find", *ARGS, "--num_training=30", "--trainer.enable_model_summary=false")
    assert found["override"].is_file() and 1e-6 < found["lr"] < 1.0
