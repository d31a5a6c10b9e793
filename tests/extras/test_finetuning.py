"""The finetuning extra: the Freeze callback keeps part of a loaded net as it was for the first epochs, across a
stage switch, unfreezes several parts gradually (each at its epoch, across a resume), and fine-tuning a digits
model on the imbalanced digits beats training from scratch."""

import json
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from test_init_from import TWO_STAGES, NetAtEpochEnd, five_class_checkpoint

from conftest import CONFIGS, DEFAULT, QUICK, assert_refused_before_training, cli
from helpers import TINY, resumed_equals_straight, stacked

FIT = ["fit", "--config", DEFAULT, *QUICK]
FINETUNE = str(CONFIGS / "experiment" / "finetune_imbalanced.yaml")
UNFREEZE, ERASING = (
    str(CONFIGS / "callbacks" / "gradual_unfreeze.yaml"),
    str(CONFIGS / "augment" / "random_erasing.yaml"),
)
FREEZE_BODY = """trainer:
  callbacks+:
    - class_path: proj.extras.finetuning.Freeze
      init_args: {pattern: "net.body.*", epochs: 2, train_bn: false}
"""


def test_freeze_keeps_the_loaded_body_across_a_stage_switch(in_tmp):
    from proj.cli.run import run_fit

    saved = {k.removeprefix("net."): v for k, v in five_class_checkpoint(in_tmp / "five.ckpt").items()}
    (in_tmp / "freeze.yaml").write_text(FREEZE_BODY)
    probe = NetAtEpochEnd()
    args = ["--config", DEFAULT, "--config", "freeze.yaml", *QUICK, "--trainer.max_epochs=3", "--test_after_fit=false"]
    result = run_fit([*args, TWO_STAGES, "--init_from", "five.ckpt"], callbacks=[probe])

    body = [k for k in saved if k.startswith("body.")]
    for epoch in (0, 1):  # frozen (BatchNorm too: train_bn false), also after the stage switch at epoch 1
        assert all(torch.equal(probe.states[epoch][k], saved[k]) for k in body), epoch
    assert not torch.equal(probe.states[0]["stem.0.weight"], saved["stem.0.weight"])  # not frozen: trained
    assert not torch.equal(probe.states[2]["body.0.0.weight"], saved["body.0.0.weight"])  # unfrozen at epoch 2
    # The second stage's optimizer was built during the frozen epochs and still holds every parameter.
    assert result.model.stage == 1
    held = {id(p) for group in result.trainer.optimizers[0].param_groups for p in group["params"]}
    assert held == {id(p) for p in result.model.parameters()}


class AtTrainStart(Callback):
    def on_train_start(self, trainer, pl_module):
        self.state = {k: v.clone() for k, v in pl_module.net.state_dict().items()}


def test_gradual_unfreezing_frees_each_part_at_its_epoch_and_resumes_bitwise(in_tmp):
    start, probe = AtTrainStart(), NetAtEpochEnd()
    args = [*stacked(ERASING, UNFREEZE), *TINY, "--trainer.max_epochs=3"]
    resumed_equals_straight(in_tmp, args, [start, probe])
    states = [start.state, *probe.states]  # before training, after epochs 0, 1, 2

    def trained_in(epoch: int, key: str) -> bool:
        return not torch.equal(states[epoch][key], states[epoch + 1][key])

    # epochs: [1, 2, 3] for body.[34], body.[01], stem (convolutions: BatchNorm trains throughout, train_bn)
    assert [trained_in(e, "body.3.0.weight") for e in range(3)] == [False, True, True]
    assert [trained_in(e, "body.0.0.weight") for e in range(3)] == [False, False, True]
    assert [trained_in(e, "stem.0.weight") for e in range(3)] == [False, False, False]
    assert all(trained_in(e, "head.3.weight") for e in range(3))


def recall_after(*args: str) -> tuple[float, object]:
    result = cli(
        "fit",
        "--config",
        DEFAULT,
        "--config",
        FINETUNE,
        "--trainer.max_epochs=3",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        *args,
    )
    return float(result.trainer.callback_metrics["test/recall"]), result  # macro recall, on the balanced test split


@pytest.mark.slow
@pytest.mark.xdist_group("default_run")  # the default run trained once, on the worker that tests it
def test_fine_tuned_digits_model_beats_scratch_on_imbalanced_digits(default_run, in_tmp):
    workdir, trained = default_run
    best = Path(trained.trainer.checkpoint_callback.best_model_path)
    tuned, result = recall_after("--init_from", str(best if best.is_absolute() else workdir / best))
    scratch, _ = recall_after()
    print(f"imbalanced digits, 3 epochs: test macro recall fine-tuned {tuned:.3f}, from scratch {scratch:.3f}")
    report = json.loads((Path(result.trainer.log_dir) / "init_from.json").read_text())
    assert not report["reinitialised"] and not report["missing"]  # the same net and classes: all of it loaded
    assert tuned > 0.9 and tuned > scratch + 0.2


def freeze(init_args: str) -> str:
    return f"--trainer.callbacks+=[{{class_path: proj.extras.finetuning.Freeze, init_args: {init_args}}}]"


BAD_INPUT = [
    ("freeze_pattern", [*FIT, freeze("{pattern: x}")], "Freeze.pattern 'x' matches no parameter"),
    # a typo in one of two patterns once left the body training, without a word
    ("freeze_one_pattern_of_two", [*FIT, freeze("{pattern: ['net.stem.*', 'net.bdy.*']}")], "'net.bdy.*' matches no"),
    # only BatchNorm, which train_bn: true keeps training: once nothing was frozen, without a word
    ("freeze_only_batchnorm", [*FIT, freeze("{pattern: 'net.stem.1.*', epochs: 2}")], "matches only BatchNorm"),
    ("freeze_everything", [*FIT, freeze("{pattern: 'net.*', train_bn: false}")], "matches every parameter"),
    ("freeze_zero_epochs", [*FIT, freeze("{pattern: 'net.body.*', epochs: 0}")], "Freeze.epochs=0"),
    ("freeze_empty_pattern", [*FIT, freeze("{pattern: []}")], "Freeze.pattern is empty"),
    (
        "freeze_epochs_per_pattern",
        [*FIT, freeze("{pattern: ['net.stem.*', 'net.head.*'], epochs: [1]}")],
        "Freeze.epochs=[1] has 1 values for 2 patterns",
    ),
]


@pytest.mark.xdist_group("tiny_run")
@pytest.mark.parametrize("case", BAD_INPUT, ids=lambda case: case[0])
def test_bad_input_is_one_clear_line_before_training(case, tiny_run, tmp_path, monkeypatch, capsys):
    assert_refused_before_training(case, tiny_run, tmp_path, monkeypatch, capsys)
