"""Multi-stage optimisation: the optimizer changes at the configured epoch, also across a resume."""

import pytest
from lightning.pytorch.callbacks import Callback

from conftest import CONFIGS, DEFAULT, QUICK, cli

pytestmark = pytest.mark.slow

SWITCH = 2
STAGES = f"""
model:
  init_args:
    optim:
      stages:
        - optimizer: {{class_path: torch.optim.Adam, init_args: {{lr: 1.0e-3}}}}
        - start_epoch: {SWITCH}
          optimizer: {{class_path: torch.optim.SGD, init_args: {{lr: 0.01, momentum: 0.9}}}}
          lr_scheduler: {{class_path: torch.optim.lr_scheduler.CosineAnnealingLR, init_args: {{T_max: 0}}}}
          interval: step
"""


class OptimizerPerEpoch(Callback):
    def __init__(self):
        self.seen: dict[int, str] = {}
        self.momentum_restored: bool | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        # the optimizer that trains this epoch (callbacks' epoch-start hooks run before the module's switch)
        self.seen.setdefault(trainer.current_epoch, type(trainer.optimizers[0]).__name__)

    def on_train_start(self, trainer, pl_module):
        state = trainer.optimizers[0].state
        self.momentum_restored = any("momentum_buffer" in s for s in state.values())


def fit(config: str, epochs: int, ckpt_path: str | None = None) -> OptimizerPerEpoch:
    result = cli("--config", DEFAULT, "--config", config, *QUICK, f"--trainer.max_epochs={epochs}", run=False)
    recorder = OptimizerPerEpoch()
    result.trainer.callbacks.append(recorder)
    result.trainer.fit(result.model, datamodule=result.datamodule, ckpt_path=ckpt_path)
    return recorder


@pytest.fixture
def stages_yaml(in_tmp):
    path = in_tmp / "stages.yaml"
    path.write_text(STAGES)
    return str(path)


def last_ckpt(in_tmp, version: int) -> str:
    return str(in_tmp / "logs" / "default" / f"version_{version}" / "checkpoints" / "last.ckpt")


def test_optimizer_switches_at_the_configured_epoch(stages_yaml):
    seen = fit(stages_yaml, epochs=4).seen
    assert seen == {0: "Adam", 1: "Adam", 2: "SGD", 3: "SGD"}


def test_resume_from_before_the_switch_still_switches(stages_yaml, in_tmp):
    fit(stages_yaml, epochs=SWITCH)  # stops with last.ckpt written in stage 0
    resumed = fit(stages_yaml, epochs=4, ckpt_path=last_ckpt(in_tmp, 0))
    assert resumed.seen == {2: "SGD", 3: "SGD"}


def test_resume_from_after_the_switch_restores_the_sgd_state(stages_yaml, in_tmp):
    fit(stages_yaml, epochs=3)  # last.ckpt written in stage 1, with SGD momentum buffers
    resumed = fit(stages_yaml, epochs=4, ckpt_path=last_ckpt(in_tmp, 0))
    assert resumed.seen == {3: "SGD"}
    assert resumed.momentum_restored  # SGD was rebuilt before its state was loaded into it


def test_resume_with_a_longer_run_warns_that_the_schedule_keeps_its_horizon(in_tmp):
    cli("fit", "--config", DEFAULT, *QUICK, "--test_after_fit=false")  # cosine planned over 2 epochs x 3 steps
    with pytest.warns(UserWarning, match=r"CosineAnnealingLR keeps T_max=6 from its checkpoint.*would give 9"):
        fit(DEFAULT, epochs=3, ckpt_path=last_ckpt(in_tmp, 0))


def test_resume_of_onecycle_with_a_longer_run_fails_before_training(in_tmp):
    onecycle = str(CONFIGS / "optim" / "sgd_onecycle.yaml")
    cli("fit", "--config", DEFAULT, "--config", onecycle, *QUICK, "--test_after_fit=false")
    with pytest.raises(ValueError, match=r"OneCycleLR keeps total_steps=6 .* would fail at step 7"):
        fit(onecycle, epochs=3, ckpt_path=last_ckpt(in_tmp, 0))
