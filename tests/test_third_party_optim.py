"""Optimizers from other packages, by class_path: Schedule-Free AdamW, whose train / eval modes the model switches
(validation, test and checkpoints see the averaged weights; a resume continues exactly), and Lion. Torch's own
optimizers by class_path, and SparseAdam refused."""

import copy

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from proj.models import Classifier
from proj.nets import SmallCNN
from proj.optim import OptimConfig, build_optimizer, parse_stages

from conftest import CONFIGS, DEFAULT, QUICK, cli, usage_error

pytestmark = pytest.mark.xdist_group("third_party_optim")  # its module fixture is built once

SCHEDULE_FREE = ["--config", DEFAULT, "--config", str(CONFIGS / "optim" / "schedulefree_adamw.yaml")]
TINY = [*QUICK, "--seed_everything=0", "--test_after_fit=false"]
SAVE_AT = (0, 1)  # (epoch, batch) where a checkpoint is saved while training


def params(module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def saved_params(path, names) -> dict[str, torch.Tensor]:
    return {n: v for n, v in torch.load(path, weights_only=True)["state_dict"].items() if n in names}


def copied_params(module, optimizer, copied, clone=True) -> dict[str, torch.Tensor]:
    """The parameters of `copied` (a deep copy of `optimizer`), by the names of the module's parameters."""
    names = {id(p): n for n, p in module.named_parameters()}
    live = [p for g in optimizer.param_groups for p in g["params"]]
    copies = [p for g in copied.param_groups for p in g["params"]]
    return {names[id(p)]: q.detach().clone() if clone else q.detach() for p, q in zip(live, copies, strict=True)}


def equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class Watch(Callback):
    """The weights each training step left, the weights validation and test evaluated, and a checkpoint saved in
    the middle of an epoch, with what schedulefree's own eval() / train() make of the optimizer at that moment."""

    def __init__(self, save_to=None):
        self.trained, self.validated, self.tested, self.save_to = {}, {}, None, save_to

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.trained[trainer.current_epoch] = params(pl_module)
        if self.save_to and (trainer.current_epoch, batch_idx) == SAVE_AT:
            self.mid_epoch_checkpoint(trainer, pl_module)

    def mid_epoch_checkpoint(self, trainer, pl_module):
        by_hand = copy.deepcopy(trainer.optimizers[0])  # the library's eval() on copies of the live parameters
        by_hand.eval()
        self.expected_x = copied_params(pl_module, trainer.optimizers[0], by_hand)
        self.before_save = params(pl_module)
        trainer.save_checkpoint(self.save_to)
        self.after_save = params(pl_module)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking and batch_idx == 0:
            self.validated[trainer.current_epoch] = params(pl_module)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if batch_idx == 0:
            self.tested = params(pl_module)


def fit(*args, watch=None, ckpt_path=None):
    result = cli(*SCHEDULE_FREE, *TINY, *args, run=False)
    if watch is not None:
        result.trainer.callbacks.append(watch)
    result.trainer.fit(result.model, datamodule=result.datamodule, ckpt_path=ckpt_path)
    return result


@pytest.fixture(scope="module")
def schedule_free(tmp_path_factory):
    """Two tiny epochs of Schedule-Free AdamW, a checkpoint saved mid-epoch, then the best checkpoint tested."""
    import os

    workdir = tmp_path_factory.mktemp("schedule_free")
    old = os.getcwd()
    os.chdir(workdir)
    try:
        watch = Watch(save_to=workdir / "mid_epoch.ckpt")
        result = fit(watch=watch)
        result.trainer.test(result.model, datamodule=result.datamodule, ckpt_path="best")
        return workdir, result, watch
    finally:
        os.chdir(old)


def test_schedule_free_validates_tests_and_saves_the_averaged_weights(schedule_free):
    workdir, result, watch = schedule_free
    names = set(watch.validated[1])
    checkpoints = workdir / "logs" / "default" / "version_0" / "checkpoints"
    for epoch in (0, 1):  # the averaged weights x are not the ones the training steps took (y)
        assert not any(torch.equal(watch.validated[epoch][n], watch.trained[epoch][n]) for n in names)
    assert equal(saved_params(checkpoints / "last.ckpt", names), watch.validated[1])  # bit for bit
    best = workdir / result.trainer.checkpoint_callback.best_model_path
    best_epoch = torch.load(best, weights_only=True)["epoch"]
    assert equal(saved_params(best, names), watch.validated[best_epoch])
    assert equal(watch.tested, watch.validated[best_epoch])  # test-after-fit evaluates what was validated
    assert equal(params(result.model), watch.validated[1])  # a finished fit leaves the model at x


def test_a_checkpoint_saved_mid_epoch_holds_the_averaged_weights_and_training_goes_on(schedule_free):
    workdir, _, watch = schedule_free
    assert equal(saved_params(workdir / "mid_epoch.ckpt", set(watch.expected_x)), watch.expected_x)
    # Training goes on from the weights it had (y), bit for bit, and the checkpoint holds them for a resumed run.
    assert equal(watch.after_save, watch.before_save)
    saved = torch.load(workdir / "mid_epoch.ckpt", weights_only=True)["schedule_free_training_weights"]
    assert equal({n: saved[n] for n in watch.before_save}, watch.before_save)


@pytest.mark.slow
def test_a_resumed_schedule_free_run_equals_the_uninterrupted_one(schedule_free, tmp_path, monkeypatch):
    _, _, straight = schedule_free
    monkeypatch.chdir(tmp_path)
    fit("--trainer.max_epochs=1")  # without the straight run's mid-epoch save, which changed nothing
    last = tmp_path / "logs" / "default" / "version_0" / "checkpoints" / "last.ckpt"
    resumed = fit("--trainer.logger.init_args.name=resumed", ckpt_path=last)
    assert equal(params(resumed.model), straight.validated[1])  # both end at the averaged weights, bit for bit


LION = "{optimizer: {class_path: lion_pytorch.Lion, init_args: {lr: 1.0e-3, weight_decay: 0.5}}}"


def test_lion_trains_above_chance(in_tmp):
    # The recipe warms up over 50 steps: a run of 20 steps takes Lion without a schedule.
    stages = f"--model.init_args.optim.stages=[{LION}]"
    args = ["--config", DEFAULT, *QUICK, "--trainer.limit_train_batches=10", stages, "--test_after_fit=false"]
    result = cli("fit", *args)
    assert type(result.trainer.optimizers[0]).__name__ == "Lion"
    assert float(result.trainer.callback_metrics["val/acc"]) > 0.5  # chance: 0.1


@pytest.mark.parametrize(
    "stage, message",
    [
        ("{optimizer: {class_path: torch.optim.SparseAdam}}", "SparseAdam' is not supported: it takes only sparse"),
        (
            "{optimizer: {class_path: schedulefree.AdamWScheduleFree}, warmup_steps: 10}",
            "warmup_steps=10: AdamWScheduleFree is schedule-free and warms up by itself; set its "
            "optimizer.init_args.warmup_steps: 10 instead",
        ),
        (
            "{optimizer: {class_path: schedulefree.AdamWScheduleFree}, interval: step, "
            "lr_scheduler: {class_path: torch.optim.lr_scheduler.CosineAnnealingLR, init_args: {T_max: 5}}}",
            "lr_scheduler: AdamWScheduleFree is schedule-free",
        ),
    ],
    ids=["sparse-adam", "schedule-free-with-warmup", "schedule-free-with-scheduler"],
)
def test_optimizers_that_cannot_run_are_refused_before_training(in_tmp, capsys, stage, message):
    err = usage_error(capsys, "fit", "--config", DEFAULT, *QUICK, f"--model.init_args.optim.stages=[{stage}]")
    assert "model.init_args.optim.stages[0]" in err and message in err
    assert not (in_tmp / "logs").exists() or not any((in_tmp / "logs").rglob("*.ckpt"))


# Torch's optimizers by class_path (README's table), with an lr that suits each: each builds through the template
# and lowers the loss of a digits batch. LBFGS evaluates its closure up to max_iter times a step.
TORCH_OPTIMIZERS = {
    "SGD": {"lr": 0.1},
    "Adam": {},
    "AdamW": {},
    "RMSprop": {},
    "Adagrad": {"lr": 1e-2},
    "Adadelta": {},
    "Adamax": {},
    "NAdam": {},
    "RAdam": {"lr": 1e-2},  # its first steps are momentum SGD steps of size lr x gradient
    "ASGD": {"lr": 0.1},
    "Rprop": {},
    "LBFGS": {"max_iter": 2},
    "Adafactor": {},
}


@pytest.fixture(scope="module")
def digits_batch():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return torch.tensor(x[:128], dtype=torch.float32).reshape(-1, 1, 8, 8) / 16, torch.tensor(y[:128])


@pytest.mark.parametrize("name", sorted(TORCH_OPTIMIZERS))
def test_torch_optimizers_train_by_class_path(name, digits_batch):
    x, y = digits_batch
    torch.manual_seed(0)
    config = OptimConfig(stages=[{"optimizer": {"class_path": name, "init_args": TORCH_OPTIMIZERS[name]}}])
    model = Classifier(SmallCNN, num_outputs=10, input_shape=(1, 8, 8), optim=config)
    optimizer = build_optimizer(model, config, parse_stages(config)[0])

    def closure():
        optimizer.zero_grad()
        loss = model.compute_loss(model(x), y)
        loss.backward()
        return loss

    first = closure().item()
    for _ in range(5):
        optimizer.step(closure)
    assert closure().item() < first
