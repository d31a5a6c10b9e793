"""The cv extra: k-fold cross-validation, each fold a complete fit and test, summarised; refused, naming the
subcommand and the reason, for a data module that cannot make folds."""

import importlib.util

import pytest
from sklearn.datasets import load_digits

from conftest import CONFIGS, DEFAULT, REGRESSION, SHORT, assert_refused_before_training, cli, help_text, usage_error

pytestmark = pytest.mark.slow


def test_cross_validation_folds_are_stratified_disjoint_and_summarised(in_tmp):
    from proj.data import DigitsDataModule

    y = load_digits().target
    tests = [DigitsDataModule(cv_folds=3, cv_fold=k).split_indices(y)["test"] for k in range(3)]
    assert sum(len(t) for t in tests) == 1797 and len(set().union(*map(set, tests))) == 1797  # a partition
    for t in tests:  # stratified: each class's share of a fold is within one sample of a third of it
        assert all(abs((y[t] == c).sum() - (y == c).sum() / 3) <= 1 for c in range(10))
    summary = cli("cv", "--config", DEFAULT, *SHORT, "--folds", "3")
    assert len(summary["folds"]) == 3
    accs = [f["test/acc"] for f in summary["folds"]]
    assert summary["mean"]["test/acc"] == pytest.approx(sum(accs) / 3)
    assert (in_tmp / "logs" / "default_cv" / "summary.json").is_file()
    assert sorted(p.name for p in (in_tmp / "logs" / "default_cv").iterdir() if p.is_dir()) == [
        "fold_0",
        "fold_1",
        "fold_2",
    ]


def test_cv_of_a_regression_lands_in_name_cv_whatever_the_logger(in_tmp):
    mlflow = CONFIGS / "logger" / "mlflow.yaml"  # a logger whose save_dir property is its run directory
    if not mlflow.is_file() or importlib.util.find_spec("mlflow") is None:
        pytest.skip("the loggers extra (configs/logger/mlflow.yaml) or mlflow is not installed")
    summary = cli("cv", *REGRESSION, "--config", str(mlflow), *SHORT, "--folds", "2")
    assert set(summary["mean"]) >= {"test/r2", "test/rmse", "test/mae", "test/loss"}
    assert sorted(p.name for p in (in_tmp / "logs" / "diabetes_regression_cv").glob("fold_*")) == ["fold_0", "fold_1"]


def test_help_shows_its_own_options(capsys):
    assert "--folds" in help_text(capsys, "cv")


@pytest.mark.xdist_group("tiny_run")
@pytest.mark.parametrize(
    "case", [("cv_folds", ["cv", "--config", DEFAULT, "--folds=1"], "--folds=1")], ids=lambda case: case[0]
)
def test_bad_input_is_one_clear_line_before_training(case, tiny_run, tmp_path, monkeypatch, capsys):
    assert_refused_before_training(case, tiny_run, tmp_path, monkeypatch, capsys)


def test_a_data_module_that_cannot_make_folds_is_refused_naming_cv_and_why(in_tmp, capsys):
    error = usage_error(capsys, "cv", "--config", DEFAULT, "--data=test_own_data.DictDigits")  # tests/test_own_data.py
    assert error.startswith("python -m proj cv: error: data DictDigits takes no cv_folds / cv_fold argument")
    assert not (in_tmp / "logs").exists()


def test_every_logger_of_a_list_writes_each_fold_into_the_cv_layout(in_tmp):
    """With several loggers (configs/logger/several.yaml: TensorBoard, MLflow, W&B) each fold's every logger writes
    into logs/default_cv/fold_<k>/; once the folds landed in logs/default/version_<n>/ and one W&B run was lost."""
    several = CONFIGS / "logger" / "several.yaml"
    if not several.is_file() or importlib.util.find_spec("mlflow") is None or importlib.util.find_spec("wandb") is None:
        pytest.skip("the loggers extra (configs/logger/several.yaml), mlflow or wandb is not installed")
    from mlflow.tracking import MlflowClient

    cli("cv", "--config", DEFAULT, "--config", str(several), *SHORT, "--trainer.max_epochs=1", "--folds", "2")
    out = in_tmp / "logs" / "default_cv"
    for k in (0, 1):
        fold = out / f"fold_{k}"
        assert (fold / "config.yaml").is_file() and list(fold.glob("events.out.tfevents.*")), k  # TensorBoard
        assert list((fold / "wandb").glob("offline-run-*")), k  # W&B
    assert not (in_tmp / "logs" / "default").exists()  # no ordinary version_<n> runs
    runs = MlflowClient(f"sqlite:///{in_tmp}/logs/mlflow.db").search_runs(
        [e.experiment_id for e in MlflowClient(f"sqlite:///{in_tmp}/logs/mlflow.db").search_experiments()]
    )
    assert sorted(r.info.run_name for r in runs) == ["default_cv/fold_0", "default_cv/fold_1"]
