"""Weight averaging (configs/callbacks/ema.yaml, swa.yaml) stacked on the default config: the averaged weights are
what is validated, saved, tested after fit and exported, and a run resumed after a crash continues the average.
The warmup inside the stage's one scheduler (proj.optim.schedulers.WithWarmup) is what lets SWA take the default."""

import copy
import os
import shutil

import onnxruntime as ort
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch.optim.lr_scheduler import LinearLR

from proj.models.deployable import deployable
from proj.optim import OptimConfig, parse_stages
from proj.optim.schedulers import WithWarmup, build_schedulers

from conftest import CONFIGS, DEFAULT, QUICK, cli, cli_in, usage_error
from helpers import kill_at, logged

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("averaging")]

EPOCHS = 3  # swa.yaml averages from int(0.75 * 3) = epoch 2 on: the weights at the start of epochs 2 and 3
TESTED = {"ema": "best", "swa": "last"}  # swa.yaml tests the final average (test_ckpt: last)


# EMA on a recipe without warmup, whose 9 steps move the weights well away from their average; SWA on the default
# config itself (warmup + cosine), which Lightning's SWA refused while the warmup was a second scheduler.
RECIPE = {"ema": ["--config", str(CONFIGS / "optim" / "adam_exponential.yaml")], "swa": []}


def fit_args(kind: str) -> list[str]:
    averaging = ["--config", str(CONFIGS / "callbacks" / f"{kind}.yaml")]
    return ["--config", DEFAULT, *RECIPE[kind], *averaging, *QUICK, f"--trainer.max_epochs={EPOCHS}"]


class KeepCheckpointBeforeLastEpoch(Callback):
    """A copy of last.ckpt as the epoch before the last left it: what a crash at the start of the last epoch leaves."""

    def __init__(self, path):
        self.path = path

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == EPOCHS - 1:
            shutil.copy(trainer.checkpoint_callback.last_model_path, self.path)


@pytest.fixture(scope="module", params=sorted(TESTED))
def runs(request, tmp_path_factory):
    """One averaging callback: a whole fit, tested after fit as `proj fit` does (test_ckpt), and the same fit resumed
    from its last.ckpt of the epoch before the last (an SWA epoch already)."""
    kind, workdir, cwd = request.param, tmp_path_factory.mktemp(request.param), os.getcwd()
    os.chdir(workdir)
    try:
        whole = cli(*fit_args(kind), run=False)
        whole.trainer.callbacks.append(KeepCheckpointBeforeLastEpoch(workdir / "crashed.ckpt"))
        whole.trainer.fit(whole.model, datamodule=whole.datamodule)
        # proj.cli.run.ProjCLI.after_fit: the checkpoint named by test_ckpt (best, or last for swa.yaml)
        whole.trainer.test(whole.model, datamodule=whole.datamodule, ckpt_path=TESTED[kind])
        resumed = cli("fit", *fit_args(kind), f"--ckpt_path={workdir / 'crashed.ckpt'}", "--test_after_fit=false")
    finally:
        os.chdir(cwd)
    return kind, workdir, whole, resumed


def checkpoint_of(workdir, result, which: str) -> tuple[str, dict]:
    path = str(workdir / getattr(result.trainer.checkpoint_callback, f"{which}_model_path"))
    return path, torch.load(path, weights_only=True)


def exported(model, dm, state: dict):
    """What `proj export` exports of a checkpoint's state_dict: a fresh copy of the model with those weights, wrapped
    with the data's preprocessing and the softmax (proj.extras.export.formats.deployable)."""
    model = copy.deepcopy(model)
    model.load_state_dict(state)
    return torch.no_grad()(deployable(model, dm))


def mean_loss(model, dm, state: dict, x: torch.Tensor, y: torch.Tensor) -> float:
    """The loss the model logs, of the given weights, from the exported model's probabilities."""
    return float(model.loss_fn(exported(model, dm, state)(x).log(), y))


def test_the_tested_checkpoint_is_the_validated_average_and_exports_with_the_same_scores(runs, tmp_path, monkeypatch):
    kind, workdir, whole, _ = runs
    path, checkpoint = checkpoint_of(workdir, whole, TESTED[kind])
    model, dm = whole.model, whole.datamodule
    average, raw = checkpoint["state_dict"], checkpoint["current_model_state"]  # the raw weights, to resume from
    # Validation saw these weights: the val/loss the checkpoint was saved with is theirs (QUICK: 2 batches of 64).
    score = next(v["current_score"] for k, v in checkpoint["callbacks"].items() if k.startswith("ModelCheckpoint"))
    xv, yv = (t[:128] for t in dm.splits["val"].tensors)
    assert mean_loss(model, dm, average, xv, yv) == pytest.approx(float(score), rel=1e-5)
    # Test after fit tested them: the checkpoint loaded fresh into the module that `proj export` writes (its state_dict,
    # raw inputs in, probabilities out; tests/test_deploy.py checks the ONNX file against it) scores the same.
    x, y = dm.splits["test"].tensors
    tested = whole.trainer.callback_metrics
    probabilities = exported(model, dm, average)(x)
    assert float(model.loss_fn(probabilities.log(), y)) == pytest.approx(float(tested["test/loss"]), rel=1e-5)
    assert float((probabilities.argmax(1) == y).float().mean()) == pytest.approx(float(tested["test/acc"]), abs=1e-6)
    # The ONNX file `proj export` writes of that checkpoint, on the same inputs.
    monkeypatch.chdir(tmp_path)
    config = workdir / "logs" / "default" / "version_0" / "config.yaml"
    info = cli("export", "--config", str(config), f"--ckpt_path={path}", "--format=onnx", f"--out={tmp_path}")
    session = ort.InferenceSession(str(tmp_path / info["files"]["model"]))
    onnx_probabilities = torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
    assert float(model.loss_fn(onnx_probabilities.log(), y)) == pytest.approx(float(tested["test/loss"]), rel=1e-5)
    assert info["measured"]["onnx fp32"]["test_accuracy"] == pytest.approx(float(tested["test/acc"]), abs=1e-4)
    # ... which the raw weights would not have: the average is not a copy of them.
    assert mean_loss(model, dm, raw, x, y) != pytest.approx(float(tested["test/loss"]), rel=1e-3)


def test_a_resumed_run_continues_the_average(runs):
    _, workdir, whole, resumed = runs
    (_, a), (_, b) = checkpoint_of(workdir, whole, "last"), checkpoint_of(workdir, resumed, "last")
    for key in ("state_dict", "current_model_state"):  # the average, and the weights it averages
        for name, value in a[key].items():
            assert torch.allclose(b[key][name].double(), value.double(), rtol=1e-5, atol=1e-6), (key, name)


def test_a_run_preempted_in_the_first_averaged_epoch_resumes_bitwise(runs, tmp_path):
    """SIGTERM after the first batch of epoch 1 (SWA's first, EMA's second), then --resume: Lightning calls no
    on_train_epoch_start for the resumed epoch, where SWA starts its annealing (it once began an epoch late, the lr
    held at 3.9e-4). The lr at every step, and the weights, raw and averaged, are the uninterrupted run's."""
    kind, workdir, *_ = runs
    # In this process (tests/test_preemption.py checks the status of a process of its own): KillAt signals this
    # process, and `python -m proj` raises the SystemExit its status would be.
    with pytest.raises(SystemExit) as stopped:
        cli_in(tmp_path, "fit", *fit_args(kind), "--test_after_fit=false", kill_at(epoch=1, batch=1, signal="SIGTERM"))
    assert stopped.value.code == 143
    cli_in(tmp_path, "fit", "--resume", "logs/default/version_0")
    run, whole = tmp_path / "logs/default/version_0", workdir / "logs/default/version_0"
    for tag in ("lr/default", "lr/default/no_decay"):  # under one tag, from every epoch's first step on
        assert logged(run, tag) == logged(whole, tag) and {0, 3, 6} <= logged(whole, tag).keys(), tag
    a, b = (torch.load(r / "checkpoints" / "last.ckpt", weights_only=True) for r in (whole, run))
    for key in ("state_dict", "current_model_state"):
        assert a[key].keys() == b[key].keys() and all(torch.equal(a[key][n], b[key][n]) for n in a[key]), key


@pytest.mark.parametrize(
    ("configs", "expected"),
    [
        (
            ["callbacks/swa.yaml", "optim/adam_then_sgd.yaml"],
            "SWA needs one optimizer stage, but model.init_args.optim.stages has 2",
        ),
        (
            ["callbacks/ema.yaml", "callbacks/swa.yaml"],
            "use one of configs/callbacks/ema.yaml, swa.yaml and avg_checkpoints.yaml",
        ),
        (
            ["callbacks/avg_checkpoints.yaml", "callbacks/ema.yaml"],
            "AverageCheckpoints and EMA are both in trainer.callbacks",
        ),
        (
            ["callbacks/avg_checkpoints.yaml", "optim/schedulefree_adamw.yaml"],
            "AverageCheckpoints: model.init_args.optim.stages[0].optimizer AdamWScheduleFree is schedule-free",
        ),
        (
            ["callbacks/pruning.yaml", "callbacks/avg_checkpoints.yaml"],
            "AverageCheckpoints averages weights that pruning (configs/callbacks/pruning.yaml) re-parametrises",
        ),
    ],
    ids=["swa-two-stages", "ema-and-swa", "avg-and-ema", "avg-schedule-free", "avg-and-pruning"],
)
def test_what_cannot_be_averaged_is_refused_before_training(in_tmp, capsys, configs, expected):
    stacked = [arg for name in configs for arg in ("--config", str(CONFIGS / name))]
    line = usage_error(capsys, "fit", "--config", DEFAULT, *stacked, *QUICK, "--trainer.max_epochs=21")
    assert expected in line
    assert not list(in_tmp.rglob("*.ckpt"))


def test_the_warmup_is_inside_the_one_scheduler_and_resumes_with_it():
    stage = {
        "optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.1}},
        "lr_scheduler": {"class_path": "torch.optim.lr_scheduler.StepLR", "init_args": {"step_size": 2, "gamma": 0.5}},
        "interval": "epoch",
        "warmup_steps": 5,
    }
    (parsed,) = parse_stages(OptimConfig(stages=[stage]))

    def built(steps_per_epoch):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        return opt, build_schedulers(opt, parsed, lambda where: 0, lambda: steps_per_epoch)

    opt, (config,) = built(3)
    assert isinstance(config["scheduler"], WithWarmup) and config["interval"] == "step"
    for _ in range(7):
        opt.step()
        config["scheduler"].step()
    again, (fresh,) = built(3)  # a resumed run: Lightning restores the optimizer (its lr) and the scheduler
    again.load_state_dict(opt.state_dict())
    fresh["scheduler"].load_state_dict(config["scheduler"].state_dict())
    lrs = [], []
    for (o, c), out in zip([(opt, config), (again, fresh)], lrs, strict=True):
        for _ in range(8):
            o.step()
            c["scheduler"].step()
            out.append(o.param_groups[0]["lr"])
    assert lrs[0] == lrs[1] and len(set(lrs[0])) > 1
    # Data of unknown length marks no epoch end in steps: the warmup stays a second, per-step scheduler.
    _, configs = built(None)
    assert [type(c["scheduler"]) for c in configs] == [torch.optim.lr_scheduler.StepLR, LinearLR]


@pytest.mark.parametrize("averaging", ["ema", "swa"])
def test_a_multi_label_models_tuned_thresholds_are_never_averaged(averaging, in_tmp):
    """EMA and SWA swap and average every buffer of the model; the thresholds tuned on validation must reach the
    checkpoints (and so test, predict, export and serve) as they were tuned."""
    experiment = str(CONFIGS / "experiment" / "digits_multilabel.yaml")
    averaged = str(CONFIGS / "callbacks" / f"{averaging}.yaml")
    args = ["--config", DEFAULT, "--config", experiment, "--config", averaged, *QUICK, "--trainer.max_epochs=4"]
    result = cli("fit", *args, "--test_after_fit=false", "--trainer.limit_val_batches=3")
    tuned = result.model.decision_thresholds
    assert not torch.allclose(tuned, torch.full_like(tuned, 0.5))  # tuned: not the starting value
    last = in_tmp / "logs" / "digits_multilabel" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.equal(torch.load(last, weights_only=False)["state_dict"]["thresholds"], tuned)


# --- AverageCheckpoints (configs/callbacks/avg_checkpoints.yaml): the mean of the last k epochs' end states ----------

AVG = ["--config", str(CONFIGS / "callbacks" / "avg_checkpoints.yaml")]


class RecordEpochEnds(Callback):
    """Each training epoch's end state, copied here, apart from AverageCheckpoints (validation has given the raw weights
    back by now, and changes none of them)."""

    def __init__(self):
        self.states = []

    def on_train_epoch_end(self, trainer, pl_module):
        self.states.append({k: v.detach().clone() for k, v in pl_module.state_dict().items()})


def mean_of(states: list[dict]) -> dict:
    """timm's average, written again: floating tensors stacked and averaged in float64; counts from the latest."""
    return {
        k: torch.stack([s[k].double() for s in states]).mean(0).to(v.dtype) if v.is_floating_point() else v
        for k, v in states[-1].items()
    }


def assert_same(a: dict, b: dict, exact: bool = True) -> None:
    assert a.keys() == b.keys()
    for name in a:
        same = torch.equal(a[name], b[name]) if exact else torch.allclose(a[name], b[name], rtol=1e-6, atol=1e-8)
        assert same, name


def averaged_fit(last_k: int, *args: str, callbacks=()):
    """A fit with AverageCheckpoints(last_k) and a recipe whose 3 steps an epoch move the weights (no warmup), with each
    epoch's end state recorded: (result, recorded states)."""
    recipe = ["--config", str(CONFIGS / "optim" / "adam_exponential.yaml")]
    result = cli("--config", DEFAULT, *recipe, *AVG, f"--trainer.callbacks.last_k={last_k}", *QUICK, *args, run=False)
    recorder = RecordEpochEnds()
    result.trainer.callbacks.extend([recorder, *callbacks])
    result.trainer.fit(result.model, datamodule=result.datamodule)
    return result, recorder.states


@pytest.fixture(scope="module")
def last_two(tmp_path_factory):
    """3 epochs averaged 2 by 2, tested and predicted on last.ckpt (avg_checkpoints.yaml's test_ckpt); and the same run
    resumed from its last.ckpt of the epoch before the last."""
    workdir, cwd = tmp_path_factory.mktemp("avg_checkpoints"), os.getcwd()
    crashed = workdir / "crashed.ckpt"
    os.chdir(workdir)
    try:
        epochs = f"--trainer.max_epochs={EPOCHS}"
        whole, states = averaged_fit(2, epochs, callbacks=[KeepCheckpointBeforeLastEpoch(crashed)])
        whole.trainer.test(whole.model, datamodule=whole.datamodule, ckpt_path="last")
        tested = {k: float(v) for k, v in whole.trainer.callback_metrics.items()}
        predicted = torch.cat(whole.trainer.predict(whole.model, datamodule=whole.datamodule, ckpt_path="last"))
        args = ["--config", DEFAULT, "--config", str(CONFIGS / "optim" / "adam_exponential.yaml"), *AVG]
        resume = [f"--ckpt_path={crashed}", "--test_after_fit=false"]
        resumed = cli("fit", *args, "--trainer.callbacks.last_k=2", *QUICK, epochs, *resume)
    finally:
        os.chdir(cwd)
    return workdir, whole, states, tested, predicted, resumed


def kept_by(checkpoint: dict) -> dict:
    return next(v for k, v in checkpoint["callbacks"].items() if k.startswith("AverageCheckpoints"))


def test_checkpoint_averaging_is_the_mean_of_the_last_k_epoch_ends(last_two):
    workdir, whole, states, tested, predicted, _ = last_two
    _, last = checkpoint_of(workdir, whole, "last")
    crashed = torch.load(workdir / "crashed.ckpt", weights_only=True)
    assert len(states) == EPOCHS
    assert_same(crashed["state_dict"], mean_of(states[0:2]), exact=False)  # epoch 1: epochs 0 and 1
    assert_same(last["state_dict"], mean_of(states[1:3]), exact=False)  # epoch 2: epochs 1 and 2, not 0
    assert_same(last["current_model_state"], states[-1])  # the raw weights, to resume from
    assert kept_by(last)["kept_epochs"] == [1, 2]
    for kept, state in zip(kept_by(last)["kept"], states[1:], strict=True):
        assert_same(kept, state)
    # Validation judged the average: last.ckpt's val/loss is its loss (QUICK: 2 batches of 64).
    model, dm = whole.model, whole.datamodule
    score = next(v["current_score"] for k, v in last["callbacks"].items() if k.startswith("ModelCheckpoint"))
    xv, yv = (t[:128] for t in dm.splits["val"].tensors)
    assert mean_loss(model, dm, last["state_dict"], xv, yv) == pytest.approx(float(score), rel=1e-5)
    # Test and predict on last.ckpt used it.
    x, y = dm.splits["test"].tensors
    assert mean_loss(model, dm, last["state_dict"], x, y) == pytest.approx(tested["test/loss"], rel=1e-5)
    assert torch.allclose(predicted, exported(model, dm, last["state_dict"])(x), atol=1e-6)
    assert mean_loss(model, dm, states[-1], x, y) != pytest.approx(tested["test/loss"], rel=1e-3)  # not the raw ones


def test_checkpoint_averaging_resumes_bitwise(last_two):
    workdir, whole, *_, resumed = last_two
    (_, a), (_, b) = checkpoint_of(workdir, whole, "last"), checkpoint_of(workdir, resumed, "last")
    for key in ("state_dict", "current_model_state"):
        assert_same(a[key], b[key])
    assert kept_by(a)["kept_epochs"] == kept_by(b)["kept_epochs"]
    for x, y in zip(kept_by(a)["kept"], kept_by(b)["kept"], strict=True):
        assert_same(x, y)


def test_averaging_the_last_epoch_alone_is_the_plain_run(in_tmp):
    result, states = averaged_fit(1, "--test_after_fit=false")
    assert_same(result.model.state_dict(), states[-1])
    last = torch.load(in_tmp / result.trainer.checkpoint_callback.last_model_path, weights_only=True)
    assert_same(last["state_dict"], last["current_model_state"])


def test_checkpoint_averaging_takes_a_whole_number_of_epochs():
    from proj.extras.averaging import AverageCheckpoints

    with pytest.raises(ValueError, match="last_k=0 must be a whole number of epochs, at least 1"):
        AverageCheckpoints(last_k=0)


def test_ema_warns_when_its_decay_would_leave_the_initial_weights_in_the_average():
    """The preset's 0.99 on the scarce digits' 160 steps kept a fifth of the untrained weights: chance accuracy."""
    import warnings

    from proj.extras.averaging.checks import warn_if_too_slow

    with pytest.warns(Warning, match=r"decay=0.99: after this run's 160 updates .* still make up 20% .* 0\.9375"):
        warn_if_too_slow(0.99, 160)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_too_slow(0.99, 600)  # the default run's steps: 0.2% left, no warning
