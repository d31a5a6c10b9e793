"""The tune extra: hyper-parameter search with Optuna and Ray Tune, each trial a normal fit."""

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from conftest import (
    CONFIGS,
    DEFAULT,
    REGRESSION,
    ROOT,
    SHORT,
    assert_refused_before_training,
    cli,
    help_text,
    usage_error,
)

pytestmark = pytest.mark.slow

SEARCH = str(CONFIGS / "hpo" / "optuna.yaml")


def tune(*args: str):
    return cli("tune", "--config", DEFAULT, "--config", SEARCH, *SHORT, *args)


def study(name: str = "digits_hpo"):
    import optuna  # here, not at the top: every worker collects this module, and optuna brings sqlalchemy (1 s)

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
    from proj.cli.run import run_fit
    from proj.extras.tune.optuna_search import MetricHistory

    history = MetricHistory("val/acc")
    run_fit(["--config", str(out / "best_config.yaml")], [history])
    assert max(history.values) == pytest.approx(result.best_value)  # it reproduces the best trial


def test_rerunning_continues_the_study_and_a_killed_trial_is_retried(in_tmp):
    from proj.extras.tune.optuna_search import RetryStale

    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    kill = '--trainer.callbacks+={"class_path": "helpers.KillAt", "init_args": {"epoch": 1, "batch": 2}}'
    args = ["tune", "--config", DEFAULT, "--config", SEARCH, *SHORT, "--tune.n_trials=3", "--tune.heartbeat_interval=1"]
    killed = subprocess.run([sys.executable, "-m", "proj", *args, kill], cwd=in_tmp, env=env, capture_output=True)
    assert killed.returncode == -9  # died inside trial 0
    assert [t.state.name for t in study().trials] == ["RUNNING"]
    # The same command again, in this process (the first had to die by SIGKILL; this one only has to run): the
    # kill's marker file is there, so nothing is killed twice.
    cli(*args, kill)
    trials = study().trials
    assert trials[0].state.name == "FAIL"  # its heartbeat stopped: marked failed ...
    retried = [t for t in trials if RetryStale.retried_trial_number(t) == 0]
    assert len(retried) == 1 and retried[0].params == trials[0].params  # ... and run again, same params
    assert sum(t.state.name == "COMPLETE" for t in trials) == 3


def test_continuing_a_study_draws_new_parameters_and_a_new_study_repeats_the_first(in_tmp):
    """The same command twice continues one study: its trials 2 and 3 once had exactly the parameters of trials 0
    and 1 (the sampler was seeded alike in every run). Another study with the same seed draws the first ones."""
    fast = ["--tune.n_trials=2", "--tune.pruner=none", "--trainer.max_epochs=1", "--trainer.limit_train_batches=2"]
    tune(*fast)
    continued = [t.params for t in tune(*fast).trials]
    assert len(continued) == 4 and len({tuple(sorted(p.items())) for p in continued}) == 4, continued
    assert [t.params for t in tune(*fast, "--tune.study_name=again").trials] == continued[:2]


def test_two_processes_share_one_study(in_tmp):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    # Trials of one epoch of 2 batches: which process ran a trial and what it drew is the point, not its score.
    fast = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--tune.n_trials=2", "--tune.pruner=none"]
    args = ["tune", "--config", DEFAULT, "--config", SEARCH, *SHORT, *fast]
    workers = [subprocess.Popen([sys.executable, "-m", "proj", *args], cwd=in_tmp, env=env) for _ in range(2)]
    assert [w.wait(timeout=600) for w in workers] == [0, 0]
    trials = study().trials
    assert len(trials) == 4 and all(t.state.name == "COMPLETE" for t in trials)
    assert len({t.user_attrs["pid"] for t in trials}) == 2  # both processes contributed
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 4  # each trial its own point (once alike)


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
    for name in ("proj.extras.tune.trials", "proj.extras.tune.ray_search", "proj.extras.tune.command"):
        monkeypatch.delitem(sys.modules, name, raising=False)
        importlib.import_module(name)


REGRESSION_SEARCH = """
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


def test_tune_optimises_a_regression_metric(in_tmp):
    (in_tmp / "search.yaml").write_text(REGRESSION_SEARCH)
    study = cli("tune", *REGRESSION, "--config", str(in_tmp / "search.yaml"), *SHORT)
    assert len(study.trials) == 2 and all(np.isfinite(t.value) and t.value > 0 for t in study.trials)


OWN_OPTIONS = ["--tune.n_trials", "--tune.metric", "--tune.direction", "--tune.sampler", "--tune.space"]
BAD_INPUT = [
    (
        "tune_space_key",
        [
            "tune", "--config", DEFAULT, "--config", SEARCH,
            "--tune.space={model.init_args.lr: {type: float, low: 0.1, high: 1}}",
        ],
        "model.init_args.lr",
    ),
    ("tune_sampler", ["tune", "--config", DEFAULT, "--config", SEARCH, "--tune.sampler=magic"], "tune.sampler"),
]  # fmt: skip


def test_help_shows_its_own_options(capsys):
    out = help_text(capsys, "tune")
    assert all(option in out for option in OWN_OPTIONS), out


@pytest.mark.xdist_group("tiny_run")
@pytest.mark.parametrize("case", BAD_INPUT, ids=lambda case: case[0])
def test_bad_input_is_one_clear_line_before_training(case, tiny_run, tmp_path, monkeypatch, capsys):
    assert_refused_before_training(case, tiny_run, tmp_path, monkeypatch, capsys)
