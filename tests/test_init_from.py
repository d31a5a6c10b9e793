"""`fit --init_from CKPT`: a new run from another run's net weights (the head of other classes re-initialised, the
report in the run directory), and resuming such a run. Fine-tuning with the Freeze callback:
tests/extras/test_finetuning.py."""

import json
from functools import partial
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

from conftest import DEFAULT, QUICK, cli

TWO_STAGES = (
    "--model.init_args.optim.stages=[{optimizer: {class_path: torch.optim.AdamW, init_args: {lr: 0.003}}}, "
    "{start_epoch: 1, optimizer: {class_path: torch.optim.SGD, init_args: {lr: 0.01, momentum: 0.9}}}]"
)


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


def test_other_classes_get_a_new_head_and_the_new_run_resumes_from_its_own_checkpoint(in_tmp):
    from proj.cli.run import run_fit

    saved = {k.removeprefix("net."): v for k, v in five_class_checkpoint(in_tmp / "five.ckpt").items()}
    probe = NetAtEpochEnd()
    args = ["--config", DEFAULT, *QUICK, "--trainer.max_epochs=3", "--test_after_fit=false"]
    result = run_fit([*args, TWO_STAGES, "--init_from", "five.ckpt"], callbacks=[probe])

    report = json.loads((Path(result.trainer.log_dir) / "init_from.json").read_text())
    assert set(report["reinitialised"]) == {"net.head.3.weight", "net.head.3.bias"}
    assert "other classes" in report["reinitialised"]["net.head.3.weight"]
    assert "net.body.0.0.weight" in report["loaded"] and not report["missing"] and not report["skipped"]
    assert result.model.net.head[3].weight.shape == (10, 64)  # this data's ten digits
    # The new run's hyper-parameters and classes are the config's, not the checkpoint's.
    assert result.model.hparams.label_smoothing == 0.05
    assert result.model.class_names == [str(i) for i in range(10)]

    assert not torch.equal(probe.states[0]["body.0.0.weight"], saved["body.0.0.weight"])  # loaded, then trained
    # The second stage's optimizer holds every parameter.
    assert result.model.stage == 1
    held = {id(p) for group in result.trainer.optimizers[0].param_groups for p in group["params"]}
    assert held == {id(p) for p in result.model.parameters()}

    # The run's config.yaml names its --init_from: resuming it continues from its own last.ckpt.
    resumed = cli("fit", "--resume", result.trainer.log_dir, "--trainer.max_epochs=4")
    assert resumed.trainer.current_epoch == 4 and resumed.trainer.global_step == 4 * 3
