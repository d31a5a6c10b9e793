"""The lr_schedule extra: `python -m proj schedule` draws the lr of every optimizer step before training. Its lr
values are checked against torch's schedulers driven by hand, recipe by recipe, in tests/test_recipes.py."""

import pytest

from conftest import DEFAULT, assert_refused_before_training, cli, help_text


def test_the_preview_writes_only_its_figure(in_tmp):
    preview = cli("schedule", "--config", DEFAULT, "--trainer.max_epochs=2", f"--out={in_tmp / 'lr.png'}")
    assert len(preview["lrs"]) == 2 * 20 and preview["plot"].is_file()  # 1257 training images: 20 batches
    assert sorted(p.name for p in in_tmp.iterdir()) == ["lr.png"]  # no logs, checkpoints or config


def test_help_shows_its_own_options(capsys):
    assert "--out" in help_text(capsys, "schedule")


@pytest.mark.xdist_group("tiny_run")
@pytest.mark.parametrize(
    "case",
    [("schedule_out_format", ["schedule", "--config", DEFAULT, "--out={tmp}/lr.txt"], "lr.txt")],
    ids=lambda case: case[0],
)
def test_bad_input_is_one_clear_line_before_training(case, tiny_run, tmp_path, monkeypatch, capsys):
    assert_refused_before_training(case, tiny_run, tmp_path, monkeypatch, capsys)
