"""Hyper-parameter search (Optuna), lr_find, batch-size finder and k-fold cross-validation."""

import csv
import os
import subprocess
import sys

import optuna
import pytest
import yaml
from sklearn.datasets import load_digits

from proj.tune.optuna_search import RetryStale

from conftest import CONFIGS, DEFAULT, ROOT, cli, usage_error

pytestmark = pytest.mark.slow

# Trials short enough for the test suite: 3 epochs of 5 batches.
SHORT = [
    "--trainer.max_epochs=3",
    "--trainer.limit_train_batches=5",
    "--trainer.limit_val_batches=3",
    "--trainer.enable_model_summary=false",
    "--trainer.enable_progress_bar=false",
]
SEARCH = str(CONFIGS / "hpo" / "optuna.yaml")


def tune(*args: str):
    return cli("tune", "--config", DEFAULT, "--config", SEARCH, *SHORT, *args)


def study(name: str = "digits_hpo") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///logs/{name}/study.db")


def test_study_beats_the_default_and_writes_its_outputs(in_tmp):
    default = cli("fit", "--config", DEFAULT, *SHORT, "--test_after_fit=false")
    baseline = max(float(v) for k, v in default.trainer.callback_metrics.items() if k == "val/acc")
    result = tune("--tune.n_trials=6", "--tune.pruner=none")
    print(f"default val/acc {baseline:.3f}, best of 6 trials {result.best_value:.3f}")
    assert result.best_value >= baseline
    out = in_tmp / "logs" / "digits_hpo"
    for name in ("trials.csv", "best_config.yaml", "history.png", "importance.png", "study.db"):
        assert (out / name).is_file(), name
    with open(out / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and all((in_tmp / r["run_dir"] / "config.yaml").is_file() for r in rows)  # one run each
    # The best config is a complete fit config: fit accepts it as is and gets the best trial's value.
    best = yaml.safe_load((out / "best_config.yaml").read_text())
    key = "model.init_args.optim.stages.0.optimizer.init_args.lr"
    assert best["model"]["init_args"]["optim"]["stages"][0]["optimizer"]["init_args"]["lr"] == result.best_params[key]
    from proj.cli.lightning_cli import run_fit
    from proj.tune.optuna_search import MetricHistory

    history = MetricHistory("val/acc")
    run_fit(["--config", str(out / "best_config.yaml")], [history])
    assert max(history.values) == pytest.approx(result.best_value)  # it reproduces the best trial


def test_rerunning_continues_the_study_and_a_killed_trial_is_retried(in_tmp):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    kill = '--trainer.callbacks+={"class_path": "helpers.KillAt", "init_args": {"epoch": 1, "batch": 2}}'
    args = ["tune", "--config", DEFAULT, "--config", SEARCH, *SHORT, "--tune.n_trials=3", "--tune.heartbeat_interval=1"]
    killed = subprocess.run([sys.executable, "-m", "proj", *args, kill], cwd=in_tmp, env=env, capture_output=True)
    assert killed.returncode == -9  # died inside trial 0
    assert [t.state.name for t in study().trials] == ["RUNNING"]
    subprocess.run([sys.executable, "-m", "proj", *args, kill], cwd=in_tmp, env=env, check=True, capture_output=True)
    trials = study().trials
    assert trials[0].state.name == "FAIL"  # its heartbeat stopped: marked failed ...
    retried = [t for t in trials if RetryStale.retried_trial_number(t) == 0]
    assert len(retried) == 1 and retried[0].params == trials[0].params  # ... and run again, same params
    assert sum(t.state.name == "COMPLETE" for t in trials) == 3


def test_two_processes_share_one_study(in_tmp):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    args = ["tune", "--config", DEFAULT, "--config", SEARCH, *SHORT, "--tune.n_trials=2", "--tune.pruner=none"]
    workers = [subprocess.Popen([sys.executable, "-m", "proj", *args], cwd=in_tmp, env=env) for _ in range(2)]
    assert [w.wait(timeout=600) for w in workers] == [0, 0]
    trials = study().trials
    assert len(trials) == 4 and all(t.state.name == "COMPLETE" for t in trials)
    assert len({t.user_attrs["pid"] for t in trials}) == 2  # both processes contributed


def test_pruning_stops_some_trials_early(in_tmp):
    result = tune("--tune.n_trials=8", "--tune.pruner=median", "--trainer.max_epochs=5")
    pruned = [t for t in result.trials if t.state.name == "PRUNED"]
    assert pruned, [t.state.name for t in result.trials]
    assert all(t.user_attrs["epochs"] < 5 for t in pruned)


def test_a_search_key_that_does_not_exist_fails_before_any_trial(in_tmp, capsys):
    error = usage_error(
        capsys, "tune", "--config", DEFAULT, "--config", SEARCH, *SHORT,
        "--tune.space={model.init_args.net.init_args.dropuot: {type: float, low: 0, high: 0.5}}",
    )  # fmt: skip
    assert "'dropuot' does not exist under model.init_args.net.init_args; did you mean 'dropout'" in error
    assert not (in_tmp / "logs" / "digits_hpo" / "trial_0000").exists()


def test_an_invalid_distribution_is_named(in_tmp, capsys):
    error = usage_error(
        capsys, "tune", "--config", DEFAULT, "--config", SEARCH, *SHORT,
        "--tune.space={data.init_args.batch_size: {type: int, low: 0, high: 64, log: true}}",
    )  # fmt: skip
    assert "tune.space.data.init_args.batch_size: a log distribution needs low > 0" in error


def test_an_objective_metric_that_is_never_logged_fails_after_the_first_trial(in_tmp):
    with pytest.raises(ValueError, match=r"tune.metric='val/accuracy' was never logged.*val/acc"):
        tune("--tune.metric=val/accuracy", "--tune.n_trials=5")
    assert len(study().trials) == 1


def test_lr_find_writes_a_plot_and_an_override_that_trains_well(in_tmp):
    found = cli("lr_find", "--config", DEFAULT, "--trainer.enable_progress_bar=false")
    assert found["plot"].is_file() and found["override"].is_file()
    assert 1e-4 < found["lr"] < 1.0
    result = cli("fit", "--config", DEFAULT, "--config", str(found["override"]), "--trainer.enable_progress_bar=false")
    assert result.model.optim.stages[0]["optimizer"]["init_args"]["lr"] == found["lr"]
    print(
        f"lr_find suggested {found['lr']:.3g}: test accuracy {float(result.trainer.callback_metrics['test/acc']):.4f}"
    )
    assert float(result.trainer.callback_metrics["test/acc"]) >= 0.985


def test_batch_size_find_writes_an_override(in_tmp):
    found = cli("batch_size_find", "--config", DEFAULT, *SHORT, "--init_val=16", "--max_trials=3")
    assert found["batch_size"] >= 16
    assert yaml.safe_load(found["override"].read_text()) == {"data": {"init_args": {"batch_size": found["batch_size"]}}}


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


def test_ray_tune_backend_on_a_local_cluster(in_tmp):
    # Two trials: one per core at once, each a Ray worker that imports Lightning.
    results = cli(
        "tune", "--config", DEFAULT, "--config", str(CONFIGS / "hpo" / "ray.yaml"), *SHORT,
        "--trainer.max_epochs=3", "--tune.n_trials=2", "--tune.ray.grace_period=1",
    )  # fmt: skip
    assert len(results) == 2 and all(r.error is None for r in results)
    out = in_tmp / "logs" / "digits_ray"
    with open(out / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and all(1 <= int(r["epochs"]) <= 3 for r in rows)
    best = yaml.safe_load((out / "best_config.yaml").read_text())
    lr = best["model"]["init_args"]["optim"]["stages"][0]["optimizer"]["init_args"]["lr"]
    assert 3e-4 <= lr <= 3e-2  # drawn from the search space, written into a complete fit config
    assert len(list(out.glob("trial_*/config.yaml"))) == 2  # every trial is a normal run directory


def test_the_ray_backend_imports_without_optuna(monkeypatch):
    """`pip install .[ray]` without `[hpo]`: the Ray path must not need optuna (it once imported it for a helper)."""
    import importlib

    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` now raises ImportError
    for name in ("proj.tune.trials", "proj.tune.ray_search", "proj.cli.tune"):
        monkeypatch.delitem(sys.modules, name, raising=False)
        importlib.import_module(name)
