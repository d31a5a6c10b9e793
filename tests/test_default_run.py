"""The default run: accuracy on held-out digits, the run directory, and what TensorBoard shows."""

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from lightning.pytorch.plugins.io import TorchCheckpointIO
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from proj.models import Classifier

from conftest import DEFAULT, QUICK, cli

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("default_run")]  # one worker trains it


def test_default_config_reaches_98_5_percent_on_the_test_split(default_run):
    _, result = default_run
    metrics = result.trainer.callback_metrics
    # fit ends by testing the best checkpoint: these are test-split numbers, not validation ones.
    assert float(metrics["test/acc"]) >= 0.985
    for name in ("test/precision", "test/recall", "test/f1", "test/auroc"):
        assert float(metrics[name]) >= 0.97, name
    checkpoint = result.trainer.checkpoint_callback
    assert result.trainer.ckpt_path == checkpoint.best_model_path  # the best checkpoint, not the last weights
    assert "best-" in checkpoint.best_model_path


def test_logged_val_loss_is_the_mean_loss_over_the_whole_split(default_run, monkeypatch):
    # Batches are accumulated weighted by their size: the logged value is the loss over all 180 images at once.
    workdir, result = default_run
    monkeypatch.chdir(workdir)  # validate logs into the run's (relative) logs/ directory
    model, dm = result.model, result.datamodule
    logged = result.trainer.validate(model, datamodule=dm, verbose=False)[0]["val/loss"]
    x, y = dm.splits["val"].tensors
    model.eval()
    with torch.no_grad():
        direct = model.loss_fn(model(dm.normalize(x * dm.scale)), y)
    assert logged == pytest.approx(float(direct), rel=1e-5)


def test_predict_returns_class_probabilities(default_run):
    _, result = default_run
    probabilities = torch.cat(result.trainer.predict(result.model, datamodule=result.datamodule))
    assert probabilities.shape == (360, 10)  # one row per test image
    assert torch.allclose(probabilities.sum(1), torch.ones(360))
    labels = result.datamodule.splits["test"].tensors[1]
    assert (probabilities.argmax(1) == labels).float().mean() >= 0.985


def test_one_run_directory_holds_config_checkpoints_and_events(default_run):
    workdir, _ = default_run
    run_dir = workdir / "logs" / "default" / "version_0"
    assert (run_dir / "config.yaml").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert list((run_dir / "checkpoints").glob("best-*.ckpt"))
    assert list(run_dir.glob("events.out.tfevents.*"))
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert not {"num_outputs", "input_shape", "targets"} & set(config["model"]["init_args"])  # linked, not written
    # The checkpoint alone rebuilds the model (the linked values are in its hyper-parameters).
    best = next((run_dir / "checkpoints").glob("best-*.ckpt"))
    model = Classifier.load_from_checkpoint(best)
    assert (
        model.hparams.num_outputs == 10
        and model.class_names[3] == "3"
        and tuple(model.hparams.input_shape) == (1, 8, 8)
    )
    assert [p.name for p in (workdir / "logs" / "default").iterdir()] == ["version_0"]


def test_last_checkpoint_holds_the_last_epoch_even_without_improvement(default_run):
    # Lightning 2.6 alone writes last.ckpt only when val/loss improves: a crash would lose the epochs since.
    workdir, result = default_run
    epochs = result.trainer.current_epoch
    checkpoints = workdir / "logs" / "default" / "version_0" / "checkpoints"
    last = torch.load(checkpoints / "last.ckpt", weights_only=True)
    best = torch.load(next(checkpoints.glob("best-*.ckpt")), weights_only=True)
    assert last["epoch"] == epochs - 1
    assert best["epoch"] < epochs - 1  # the run did have epochs without improvement (early stopping's patience)
    assert not (checkpoints / "last.ckpt").is_symlink()


def test_last_checkpoint_links_to_the_best_when_the_last_epoch_was_best(in_tmp):
    # One epoch: its checkpoint is the best so far, and last.ckpt points at it instead of a second copy.
    result = cli("fit", "--config", DEFAULT, *QUICK, "--trainer.max_epochs=1", "--test_after_fit=false")
    last = in_tmp / "logs/default/version_0/checkpoints/last.ckpt"
    assert last.is_symlink() and last.resolve() == Path(result.trainer.checkpoint_callback.best_model_path).resolve()
    assert torch.load(last, weights_only=True)["epoch"] == 0


def test_tensorboard_has_losses_metrics_and_learning_rate(default_run):
    workdir, _ = default_run
    events = EventAccumulator(str(workdir / "logs" / "default" / "version_0")).Reload()
    tags = set(events.Tags()["scalars"])
    for tag in ("train/loss_step", "train/loss_epoch", "train/acc", "val/loss", "val/acc", "val/f1", "val/auroc"):
        assert tag in tags, f"{tag} missing from {sorted(tags)}"
    lr_tags = [t for t in tags if t.startswith("lr/")]
    assert lr_tags, sorted(tags)
    # Every logged lr equals torch's own warmup + cosine at that step, wherever early stopping ended the run.
    trainer = default_run[1].trainer
    logged = [(e.step, e.value) for e in events.Scalars(lr_tags[0])]
    last = max(step for step, _ in logged)
    expected = reference_lrs(total_steps=trainer.max_epochs * 20, steps=last)  # 1257 training images: 20 batches
    assert [step for step, _ in logged] == list(range(last + 1))  # every optimizer step, not each 10th
    for step, value in logged:
        assert value == pytest.approx(expected[step], rel=1e-5), step


def reference_lrs(total_steps: int, steps: int) -> list[float]:
    """configs/default.yaml's schedule driven by hand: AdamW at 3e-3, a cosine to 1e-5 over the whole run (in
    optimizer steps) and a 50-step linear warmup from 1% of the lr; the lr after each number of steps."""
    optimizer = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=3e-3)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps, eta_min=1e-5)
    warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.01, end_factor=1.0, total_iters=50)
    lrs = [optimizer.param_groups[0]["lr"]]
    for _ in range(steps):
        optimizer.step()
        cosine.step()
        warmup.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    return lrs


def test_running_the_same_command_twice_makes_a_new_version(in_tmp):
    for _ in range(2):
        result = cli("fit", "--config", DEFAULT, *QUICK, "--test_after_fit=false")
        assert not any(k.startswith("test/") for k in result.trainer.callback_metrics)  # no test was run
    versions = sorted(p.name for p in (in_tmp / "logs" / "default").iterdir())
    assert versions == ["version_0", "version_1"]
    assert all((in_tmp / "logs" / "default" / v / "config.yaml").is_file() for v in versions)


def test_print_config_round_trips_to_the_same_run(in_tmp, capsys):
    args = [*QUICK, "--seed_everything=7", "--test_after_fit=false"]
    with pytest.raises(SystemExit):
        cli("fit", "--config", DEFAULT, *args, "--print_config")
    printed = capsys.readouterr().out
    saved = Path(in_tmp / "printed.yaml")
    saved.write_text(printed)

    first = cli("fit", "--config", DEFAULT, *args)
    second = cli("fit", "--config", str(saved))
    a, b = first.model.state_dict(), second.model.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].equal(b[key]), key


def test_a_run_cut_short_by_max_steps_ends_cleanly_and_keeps_its_weights(in_tmp):
    # 5 of an epoch's 20 steps: no validation has run, so early stopping must not demand val/loss.
    result = cli("fit", "--config", DEFAULT, "--trainer.max_steps=5", "--trainer.enable_progress_bar=false")
    assert result.trainer.global_step == 5
    assert torch.load(in_tmp / "logs/default/version_0/checkpoints/last.ckpt", weights_only=True)["global_step"] == 5


def test_the_progress_bar_redraws_every_10_batches_and_switches_off(in_tmp):
    assert cli("--config", DEFAULT, run=False).trainer.progress_bar_callback.refresh_rate == 10
    off = cli("--config", DEFAULT, "--trainer.enable_progress_bar=false", run=False)
    assert off.trainer.progress_bar_callback is None  # the configured bar is dropped, not refused by Lightning


class InPlaceCheckpointIO(TorchCheckpointIO):
    """Writes where the path points, as a sharded FSDP checkpoint (a directory written into) does; Lightning's
    own file writer and AtomicCheckpointIO replace the path instead."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        torch.save(checkpoint, path)


def test_writing_last_never_goes_through_the_link_into_the_best_checkpoint(in_tmp):
    # Saving last.ckpt while it links to best-00 must not overwrite best-00. Monitoring "epoch" (min) makes
    # epoch 0 the best and epoch 1 no better, so epoch 1 writes last.ckpt itself.
    (in_tmp / "ckpt.yaml").write_text(
        f"trainer:\n  plugins: [{{class_path: {__name__}.InPlaceCheckpointIO}}]\n  callbacks:\n"
        "    - class_path: proj.callbacks.ModelCheckpointEveryEpoch\n"
        "      init_args: {monitor: epoch, mode: min, save_top_k: 1, save_last: link, filename: 'best-{epoch:02d}'}\n"
    )
    cli("fit", "--config", DEFAULT, "--config", "ckpt.yaml", *QUICK, "--test_after_fit=false")
    checkpoints = in_tmp / "logs/default/version_0/checkpoints"
    assert torch.load(checkpoints / "best-epoch=00.ckpt", weights_only=True)["epoch"] == 0
    assert not (checkpoints / "last.ckpt").is_symlink()
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["epoch"] == 1


def test_predict_writes_one_row_per_input_with_the_test_accuracy(default_run, tmp_path, monkeypatch):
    workdir, result = default_run
    run_dir = workdir / "logs" / "default" / "version_0"
    best = workdir / result.trainer.checkpoint_callback.best_model_path  # absolute: tests run in their own folders
    monkeypatch.chdir(tmp_path)  # predict and test start run directories of their own: not in the shared run
    args = ["--config", str(run_dir / "config.yaml"), f"--ckpt_path={best}", "--trainer.enable_progress_bar=false"]
    cli("predict", *args)
    with open(run_dir / "predict" / "predictions.csv") as f:  # in the run's directory, not a new version
        rows = list(csv.DictReader(f))
    assert len(rows) == 360  # the test split
    probabilities = np.array([[float(r[f"p_{c}"]) for c in range(10)] for r in rows])
    assert np.allclose(probabilities.sum(1), 1.0, atol=1e-5)
    # ids are the samples' indices in scikit-learn's digits: check the labels through them
    from sklearn.datasets import load_digits

    target = load_digits().target
    accuracy = np.mean([int(r["predicted"]) == target[int(r["id"])] for r in rows])
    tested = cli("test", *args)
    assert accuracy == pytest.approx(float(tested.trainer.callback_metrics["test/acc"]), abs=1e-6)
