"""`fit --init_from CKPT`: a new run from another run's net weights (the head of other classes re-initialised, the
report in the run directory), the Freeze callback across a stage switch, resuming such a run, and fine-tuning a
digits model on the imbalanced digits against training from scratch."""

import json
from functools import partial
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from conftest import CONFIGS, DEFAULT, QUICK, cli

FINETUNE = str(CONFIGS / "experiment" / "finetune_imbalanced.yaml")
TWO_STAGES = (
    "--model.init_args.optim.stages=[{optimizer: {class_path: torch.optim.AdamW, init_args: {lr: 0.003}}}, "
    "{start_epoch: 1, optimizer: {class_path: torch.optim.SGD, init_args: {lr: 0.01, momentum: 0.9}}}]"
)
FREEZE_BODY = """trainer:
  callbacks+:
    - class_path: proj.callbacks.Freeze
      init_args: {pattern: "net.body.*", epochs: 2, train_bn: false}
"""


def five_class_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """The default net for 5 other classes, saved as fit saves it, with another label_smoothing than the config's."""
    from proj.models import Classifier
    from proj.nets import SmallCNN

    targets = {"task": "classification", "classes": ["a", "b", "c", "d", "e"]}
    model = Classifier(partial(SmallCNN, widths=[32, 64]), 5, (1, 8, 8), targets, label_smoothing=0.3)
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path)
    return {k: v.clone() for k, v in model.state_dict().items()}


class NetAtEpochEnd(Callback):
    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.states.append({k: v.clone() for k, v in pl_module.net.state_dict().items()})


def test_other_classes_get_a_new_head_and_freeze_keeps_the_body_across_a_stage_switch(in_tmp):
    from proj.cli.lightning_cli import run_fit

    saved = {k.removeprefix("net."): v for k, v in five_class_checkpoint(in_tmp / "five.ckpt").items()}
    (in_tmp / "freeze.yaml").write_text(FREEZE_BODY)
    probe = NetAtEpochEnd()
    args = ["--config", DEFAULT, "--config", "freeze.yaml", *QUICK, "--trainer.max_epochs=3", "--test_after_fit=false"]
    result = run_fit([*args, TWO_STAGES, "--init_from", "five.ckpt"], callbacks=[probe])

    report = json.loads((Path(result.trainer.log_dir) / "init_from.json").read_text())
    assert set(report["reinitialised"]) == {"net.head.3.weight", "net.head.3.bias"}
    assert "other classes" in report["reinitialised"]["net.head.3.weight"]
    assert "net.body.0.0.weight" in report["loaded"] and not report["missing"] and not report["skipped"]
    assert result.model.net.head[3].weight.shape == (10, 64)  # this data's ten digits
    # The new run's hyper-parameters and classes are the config's, not the checkpoint's.
    assert result.model.hparams.label_smoothing == 0.05
    assert result.model.class_names == [str(i) for i in range(10)]

    body = [k for k in saved if k.startswith("body.")]
    for epoch in (0, 1):  # frozen (BatchNorm too: train_bn false), also after the stage switch at epoch 1
        assert all(torch.equal(probe.states[epoch][k], saved[k]) for k in body), epoch
    assert not torch.equal(probe.states[0]["stem.0.weight"], saved["stem.0.weight"])  # not frozen: trained
    assert not torch.equal(probe.states[2]["body.0.0.weight"], saved["body.0.0.weight"])  # unfrozen at epoch 2
    # The second stage's optimizer was built during the frozen epochs and still holds every parameter.
    assert result.model.stage == 1
    held = {id(p) for group in result.trainer.optimizers[0].param_groups for p in group["params"]}
    assert held == {id(p) for p in result.model.parameters()}

    # The run's config.yaml names its --init_from: resuming it continues from its own last.ckpt.
    resumed = cli("fit", "--resume", result.trainer.log_dir, "--trainer.max_epochs=4")
    assert resumed.trainer.current_epoch == 4 and resumed.trainer.global_step == 4 * 3


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
