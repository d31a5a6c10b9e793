"""The finders extra: lr_find and batch_size_find on the real config, each writing an override to stack."""

import pytest
import yaml

from conftest import DEFAULT, REGRESSION, SHORT, assert_refused_before_training, cli, help_text

pytestmark = pytest.mark.slow


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


def test_lr_find_on_the_regressor(in_tmp):
    found = cli("lr_find", *REGRESSION, "--num_training=30", "--trainer.enable_model_summary=false")
    assert found["override"].is_file() and 1e-6 < found["lr"] < 1.0


OWN_OPTIONS = {"lr_find": ["--min_lr", "--max_lr", "--num_training"], "batch_size_find": ["--init_val", "--max_trials"]}
BAD_INPUT = [
    ("lr_find_range", ["lr_find", "--config", DEFAULT, "--min_lr=1", "--max_lr=0.1"], "--min_lr=1"),
    ("batch_size_find_init", ["batch_size_find", "--config", DEFAULT, "--init_val=0"], "--init_val=0"),
]


@pytest.mark.parametrize("name", sorted(OWN_OPTIONS))
def test_help_shows_its_own_options(name, capsys):
    out = help_text(capsys, name)
    assert all(option in out for option in OWN_OPTIONS[name]), out


@pytest.mark.xdist_group("tiny_run")
@pytest.mark.parametrize("case", BAD_INPUT, ids=lambda case: case[0])
def test_bad_input_is_one_clear_line_before_training(case, tiny_run, tmp_path, monkeypatch, capsys):
    assert_refused_before_training(case, tiny_run, tmp_path, monkeypatch, capsys)
