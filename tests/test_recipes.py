"""Every recipe in configs/optim/: the lr at each optimizer step of a short fit equals torch's own schedulers
driven by hand with the same settings (warmup and gradient accumulation included).

The references below are written with torch alone (or a third-party optimizer's own library), not with
proj.optim, so they check the glue rather than repeat it. Numbers come from the recipe files; only the horizons
left at 0 are computed here. Where the lr_schedule extra is installed, its preview must draw the same numbers.
"""

import importlib
import math
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch.callbacks import Callback, EarlyStopping
from torch.optim import lr_scheduler as sched

from proj.cli.registry import commands

from conftest import CONFIGS, DEFAULT, cli

pytestmark = pytest.mark.slow
PREVIEW = "schedule" in commands()  # the lr_schedule extra's preview must draw the same numbers, where installed

EPOCHS = 24
BATCHES = 3  # training batches per epoch
ACCUMULATE = 2  # so an epoch is ceil(3 / 2) = 2 optimizer steps: the last, partial window steps too
STEPS_PER_EPOCH = math.ceil(BATCHES / ACCUMULATE)
TOTAL_STEPS = EPOCHS * STEPS_PER_EPOCH


class Recorder(Callback):
    """The lr of the first parameter group at every optimizer step, and the val loss after every epoch. A
    Schedule-Free optimizer keeps its lr and scales it inside its step: that lr (`scheduled_lr`) is in `scheduled`."""

    def __init__(self):
        self.lrs: dict[int, float] = {}
        self.scheduled: dict[int, float] = {}
        self.optimizers: dict[int, str] = {}
        self.val_losses: list[float] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        # LBFGS evaluates its closure several times per step: keep the first value of each step.
        self.lrs.setdefault(trainer.global_step, optimizer.param_groups[0]["lr"])
        self.optimizers.setdefault(trainer.current_epoch, type(optimizer).__name__)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step and "scheduled_lr" in trainer.optimizers[0].param_groups[0]:
            self.scheduled.setdefault(trainer.global_step - 1, trainer.optimizers[0].param_groups[0]["scheduled_lr"])

    def on_validation_end(self, trainer, pl_module):  # after the module has logged the epoch's val/ metrics
        if not trainer.sanity_checking:
            self.val_losses.append(float(trainer.callback_metrics["val/loss"]))


# The plateau recipe halves its lr after 2 epochs without a better val/loss. Whether that happens within these 24
# short epochs depends on the run's floats, which differ between machines; with threshold 1 (relative) no epoch
# counts as better, so the lr halves every 3 epochs on any machine and the test always sees it move. The lr is
# still compared with torch's ReduceLROnPlateau fed the same val losses.
PLATEAU_FORCED = {"threshold": 1.0}


def plateau_override() -> Path:
    stage = stages("rmsprop_plateau")[0]
    stage["lr_scheduler"]["init_args"].update(PLATEAU_FORCED)
    path = Path("plateau_forced.yaml")  # in the test's own working directory
    path.write_text(yaml.safe_dump({"model": {"init_args": {"optim": {"stages": [stage]}}}}))
    return path


def recipe_args(name: str) -> list[str]:
    # L-BFGS and SAM refuse gradient accumulation (test_optim.py, test_optim_extras.py): 2 batches of 1 step each
    # make the same 2 steps an epoch.
    batches, accumulate = (STEPS_PER_EPOCH, 1) if name in ("lbfgs", "sam") else (BATCHES, ACCUMULATE)
    return [
        "--config",
        DEFAULT,
        "--config",
        str(CONFIGS / "optim" / f"{name}.yaml"),
        f"--trainer.max_epochs={EPOCHS}",
        f"--trainer.limit_train_batches={batches}",
        f"--trainer.accumulate_grad_batches={accumulate}",
        "--seed_everything=0",
        *(["--config", str(plateau_override())] if name == "rmsprop_plateau" else []),
    ]


def fit_recipe(name: str) -> Recorder:
    result = cli(
        *recipe_args(name),
        "--trainer.limit_val_batches=2",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        run=False,
    )
    for callback in result.trainer.callbacks:
        if isinstance(callback, EarlyStopping):  # it must not cut the schedule short
            callback.patience = EPOCHS
    recorder = Recorder()
    result.trainer.callbacks.append(recorder)
    result.trainer.fit(result.model, datamodule=result.datamodule)
    assert sorted(recorder.lrs) == list(range(TOTAL_STEPS))
    return recorder


def stages(name: str) -> list[dict]:
    optim = yaml.safe_load((CONFIGS / "optim" / f"{name}.yaml").read_text())["model"]["init_args"]["optim"]
    if "stages" not in optim:  # layer_decay: the default's stages, the first group's lr scaled
        default = yaml.safe_load(Path(DEFAULT).read_text())["model"]["init_args"]["optim"]["stages"]
        stage = {**default[0], "optimizer": dict(default[0]["optimizer"])}
        init_args = stage["optimizer"]["init_args"]
        stage["optimizer"]["init_args"] = {**init_args, "lr": init_args["lr"] * optim["layer_decay"] ** 5}
        return [stage]
    return optim["stages"]


def new_optimizer(stage: dict) -> torch.optim.Optimizer:
    """torch's optimizer of the stage; a wrapper (SAM, Lookahead) as its base optimizer, whose lr it schedules."""
    init_args = dict(stage["optimizer"]["init_args"])
    path = init_args.pop("base_optimizer", None) or stage["optimizer"]["class_path"]
    for own in ("rho", "adaptive", "k", "alpha", "pullback_momentum"):
        init_args.pop(own, None)
    module, _, name = path.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    return cls([torch.nn.Parameter(torch.zeros(2))], **init_args)


def args(stage: dict, **horizon) -> dict:
    return {**stage["lr_scheduler"]["init_args"], **horizon}


def warmup(opt, stage: dict) -> sched.LinearLR:
    return sched.LinearLR(opt, start_factor=0.01, end_factor=1.0, total_iters=stage["warmup_steps"])


def drive(build, val_losses=()) -> list[float]:
    """Step schedulers by hand as a plain loop would. `build(epoch)` returns (optimizer, per-step, per-epoch
    schedulers) when a new stage starts at `epoch`, else None."""
    lrs = []
    for epoch in range(EPOCHS):
        built = build(epoch)
        if built:
            opt, per_step, per_epoch = built
        for _ in range(STEPS_PER_EPOCH):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step(lambda: torch.tensor(0.0))  # no gradients: only the schedule moves (LBFGS needs a closure)
            for s in per_step:
                s.step()
        for s in per_epoch:
            s.step(val_losses[epoch]) if isinstance(s, sched.ReduceLROnPlateau) else s.step()
    return lrs


def single_stage(name: str, make):
    """`make(opt, stage)` returns (per-step, per-epoch) schedulers in the order they are created."""
    stage = stages(name)[0]

    def build(epoch):
        if epoch == 0:
            opt = new_optimizer(stage)
            return (opt, *make(opt, stage))
        return None

    return build


def step_with_warmup(main, warm):
    """An epoch scheduler created first, then the per-step warmup created after it (the template's order)."""
    return [warm], [main]


REFERENCES = {
    "adamw_cosine_warmup": lambda o, s: (
        [sched.CosineAnnealingLR(o, **args(s, T_max=TOTAL_STEPS)), warmup(o, s)],
        [],
    ),
    "sgd_nesterov_step": lambda o, s: step_with_warmup(sched.StepLR(o, **args(s)), warmup(o, s)),
    "sgd_multistep": lambda o, s: ([], [sched.MultiStepLR(o, **args(s))]),
    "adam_exponential": lambda o, s: ([], [sched.ExponentialLR(o, **args(s))]),
    "rmsprop_plateau": lambda o, s: (
        [],
        [sched.ReduceLROnPlateau(o, **{k: v for k, v in args(s, **PLATEAU_FORCED).items() if k != "monitor"})],
    ),
    "sgd_onecycle": lambda o, s: ([sched.OneCycleLR(o, **args(s, total_steps=TOTAL_STEPS))], []),
    "sgd_cyclic": lambda o, s: ([sched.CyclicLR(o, **args(s))], []),
    "adamw_warm_restarts": lambda o, s: ([sched.CosineAnnealingWarmRestarts(o, **args(s))], []),
    "chain_warmup_exp_step_cosine": lambda o, s: (
        [],
        [
            sched.SequentialLR(
                o,
                [
                    sched.LinearLR(o, **s["lr_scheduler"][0]["init_args"]),
                    sched.ExponentialLR(o, **s["lr_scheduler"][1]["init_args"]),
                    sched.StepLR(o, **s["lr_scheduler"][2]["init_args"]),
                    # the last phase runs from the last milestone to the end of the run
                    sched.CosineAnnealingLR(
                        o, **{**s["lr_scheduler"][3]["init_args"], "T_max": EPOCHS - s["milestones"][-1]}
                    ),
                ],
                milestones=s["milestones"],
            )
        ],
    ),
    "lbfgs": lambda o, s: ([], [sched.StepLR(o, **args(s))]),
    "lion": lambda o, s: ([sched.CosineAnnealingLR(o, **args(s, T_max=TOTAL_STEPS)), warmup(o, s)], []),
    "adamw_wsd": lambda o, s: (
        [],
        [
            sched.SequentialLR(
                o,
                [
                    sched.LinearLR(o, **{**s["lr_scheduler"][0]["init_args"], "total_iters": s["milestones"][0]}),
                    sched.ConstantLR(o, factor=1.0, total_iters=s["milestones"][1] - s["milestones"][0]),
                    # (its decay starts at epoch 24 of the default's 30: after this 24-epoch run)
                    sched.LinearLR(
                        o, start_factor=1.0, end_factor=0.01, total_iters=max(EPOCHS - s["milestones"][1], 1)
                    ),
                ],
                milestones=s["milestones"],
            )
        ],
    ),
    # The wrappers of the optim_extras extra: their lr is their base optimizer's, scheduled as the default's.
    "sam": lambda o, s: ([sched.CosineAnnealingLR(o, **args(s, T_max=TOTAL_STEPS)), warmup(o, s)], []),
    "lookahead": lambda o, s: ([sched.CosineAnnealingLR(o, **args(s, T_max=TOTAL_STEPS)), warmup(o, s)], []),
    # The default's stage; the recorded first group is the stem's, at 0.75 ** 5 of the lr (stem, 4 convs, head).
    "layer_decay": lambda o, s: ([sched.CosineAnnealingLR(o, **args(s, T_max=TOTAL_STEPS)), warmup(o, s)], []),
}
# Presets of an extra are deleted with it (docs/extras/*.md): only the recipes present are compared.
REFERENCES = {name: make for name, make in REFERENCES.items() if (CONFIGS / "optim" / f"{name}.yaml").is_file()}
# Schedule-Free recipes have no scheduler: their own warmup is compared, with the library's optimizer stepped by hand.
SCHEDULE_FREE = {"schedulefree_adamw"}


def test_every_recipe_has_a_reference():
    recipes = {p.stem for p in Path(CONFIGS / "optim").glob("*.yaml")}  # each file of configs/optim/
    assert recipes == {*REFERENCES, *SCHEDULE_FREE, "adam_then_sgd"}


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_recipe_lr_equals_torch_driven_by_hand(name, in_tmp):
    recorder = fit_recipe(name)
    expected = drive(single_stage(name, REFERENCES[name]), recorder.val_losses)
    got = [recorder.lrs[i] for i in range(TOTAL_STEPS)]
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-15)
    assert len(set(expected)) > 1  # the schedule really moves within this short fit
    if not PREVIEW:
        return
    # The preview (`python -m proj schedule`) draws the same numbers without training.
    preview = cli("schedule", *recipe_args(name), f"--out={in_tmp / 'lr.png'}")
    assert (in_tmp / "lr.png").is_file()
    if name == "rmsprop_plateau":  # it reacts to validation results, which a preview does not have
        assert set(preview["lrs"]) == {got[0]}
    else:
        assert preview["lrs"] == pytest.approx(got, rel=1e-12, abs=1e-15)


def test_adam_then_sgd_switches_optimizer_and_schedule(in_tmp):
    first, second = stages("adam_then_sgd")
    switch = second["start_epoch"]
    assert 0 < switch < EPOCHS

    def build(epoch):
        if epoch == 0:
            opt = new_optimizer(first)
            return opt, [warmup(opt, first)], []
        if epoch == switch:  # a fresh optimizer; its cosine spans the rest of the run in steps
            opt = new_optimizer(second)
            return opt, [sched.CosineAnnealingLR(opt, **args(second, T_max=(EPOCHS - switch) * STEPS_PER_EPOCH))], []
        return None

    recorder = fit_recipe("adam_then_sgd")
    if PREVIEW:
        preview = cli("schedule", *recipe_args("adam_then_sgd"), f"--out={in_tmp / 'lr.png'}")
        assert preview["lrs"] == pytest.approx([recorder.lrs[i] for i in range(TOTAL_STEPS)], rel=1e-12, abs=1e-15)
    expected = drive(build)
    assert [recorder.lrs[i] for i in range(TOTAL_STEPS)] == pytest.approx(expected, rel=1e-9, abs=1e-15)
    assert {e: n for e, n in recorder.optimizers.items() if e in (switch - 1, switch)} == {
        switch - 1: "Adam",
        switch: "SGD",
    }


@pytest.mark.parametrize("name", sorted(SCHEDULE_FREE))
def test_schedule_free_recipe_warms_up_like_the_library_driven_by_hand(name, in_tmp):
    recorder = fit_recipe(name)
    opt = new_optimizer(stages(name)[0])
    opt.train()
    expected = []
    for _ in range(TOTAL_STEPS):
        opt.step()  # no gradients: only the optimizer's own warmup moves
        expected.append(opt.param_groups[0]["scheduled_lr"])
    assert [recorder.scheduled[i] for i in range(TOTAL_STEPS)] == pytest.approx(expected, rel=1e-12)
    assert len(set(expected)) > 1  # it warms up within this short fit
    lr = stages(name)[0]["optimizer"]["init_args"]["lr"]
    assert set(recorder.lrs.values()) == {lr}  # no scheduler touched the lr
    if PREVIEW:
        assert set(cli("schedule", *recipe_args(name), f"--out={in_tmp / 'lr.png'}")["lrs"]) == {lr}
