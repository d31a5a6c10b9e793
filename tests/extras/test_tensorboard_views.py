"""The tensorboard_views extra: what the default run draws besides Lightning's curves (confusion matrix or
predicted-vs-true scatter, augmented samples, HPARAMS, gradient norm, throughput), read back from the logs."""

import contextlib
import io
from itertools import pairwise

import numpy as np
import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import COMPARED_HPARAMS, CONFIGS, DEFAULT, QUICK, cli

pytestmark = pytest.mark.slow


@pytest.mark.xdist_group("csv_run")
def test_hparams_are_the_readable_keys_runs_are_compared_by(csv_run):
    run_dir, _, _ = csv_run
    hparams = yaml.safe_load((run_dir / "hparams.yaml").read_text())
    for key, value in COMPARED_HPARAMS.items():
        assert hparams.get(key) == value, (key, hparams.get(key))
    text = yaml.safe_dump(hparams)
    assert "_class_path" not in text and "_instantiator" not in text and "init_args" not in text


@pytest.mark.xdist_group("regression_run")
def test_a_regression_shows_the_scatter_not_the_confusion_matrix(diabetes_run):
    _, run_dir, _ = diabetes_run
    images, scalars = set(), set()
    for f in run_dir.glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(f), size_guidance={"images": 0}).Reload()
        images |= set(acc.Tags()["images"])
        scalars |= set(acc.Tags()["scalars"])
    assert "val/predicted_vs_true" in images and "val/confusion_matrix" not in images
    assert {"val/rmse", "val/r2", "val/mae", "train/loss_epoch", "hp/val_rmse", "hp/test_r2"} <= scalars


@pytest.mark.xdist_group("default_run")
def test_the_default_run_draws_every_view(default_run):
    workdir, _ = default_run
    events = EventAccumulator(str(workdir / "logs" / "default" / "version_0")).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/grad_norm", "train/device/samples_per_sec", "hp/val_acc", "hp/test_acc"} <= tags
    # Throughput counts every batch between logged steps: samples per batch is the batch size (64; an epoch's
    # last batch is smaller), and one device is the whole run.
    samples = [e.value for e in events.Scalars("train/device/samples_per_sec")]
    batches = [e.value for e in events.Scalars("train/device/batches_per_sec")]
    assert all(60 <= s / b <= 64 for s, b in zip(samples, batches, strict=True))
    assert [e.value for e in events.Scalars("train/samples_per_sec")] == samples
    images = set()
    hparams = set()
    drawn = []  # steps of the confusion matrix figures
    for f in (workdir / "logs" / "default" / "version_0").glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(f), size_guidance={"images": 0}).Reload()  # 0: keep every image
        images |= set(acc.Tags()["images"])
        if "val/confusion_matrix" in acc.Tags()["images"]:
            drawn += [image.step for image in acc.Images("val/confusion_matrix")]
        with contextlib.suppress(KeyError):  # only the file written during fit holds them
            hparams |= set(acc.PluginTagToContent("hparams"))
    assert {"val/confusion_matrix", "train/augmented_samples"} <= images
    # The confusion matrix is drawn at epochs 9, 19, ... and for the last epoch at the end of fit.
    epochs = default_run[1].trainer.current_epoch  # epochs run: early stopping may end before max_epochs
    assert len(drawn) == epochs // 10 + (epochs % 10 != 0), (drawn, epochs)
    assert "_hparams_/session_start_info" in hparams  # the HPARAMS tab, with the hp/ metrics above


def test_throughput_is_measured_once_per_logged_optimizer_step_under_accumulation(in_tmp):
    # 8 optimizer steps of 2 batches an epoch, logged every 2nd: measured at the batch that closes a logged
    # step, never at another batch of it (which would measure one batch, at a step next to a logged one).
    cli("fit", "--config", DEFAULT, *QUICK, "--trainer.limit_train_batches=16", "--trainer.accumulate_grad_batches=2",
        "--trainer.log_every_n_steps=2", "--test_after_fit=false")  # fmt: skip
    events = EventAccumulator(str(in_tmp / "logs/default/version_0")).Reload()
    steps = [e.step for e in events.Scalars("train/device/samples_per_sec")]
    assert len(steps) >= 4 and all((b - a) % 2 == 0 and b > a for a, b in pairwise(steps)), steps
    samples, batches = (events.Scalars(f"train/device/{k}_per_sec") for k in ("samples", "batches"))
    assert all(s.value / b.value == pytest.approx(64) for s, b in zip(samples, batches, strict=True))


@pytest.mark.xdist_group("csv_run")
def test_a_logger_without_images_is_named_once(csv_run):
    _, _, messages = csv_run
    told = [m for m in messages if "CSVLogger shows no images" in m]
    assert len(told) == 1, messages  # the confusion matrix and the sample grid were both skipped


def test_confusion_matrix_names_every_one_of_100_classes_on_both_axes_without_overlap():
    from proj.extras.tensorboard_views.confusion_matrix import confusion_image

    names = [f"class_{i:02d}" for i in range(95)] + ["aquarium_fish", "sweet_pepper", "maple_tree", "lawn_mower", "x"]
    image = confusion_image(np.random.default_rng(0).dirichlet(np.ones(100), size=100), names, "validation")
    height, width, _ = image.shape
    assert width <= 2600 and height <= 2600  # a readable image, not a poster
    dark = image.mean(-1) < 128
    # The matrix's black frame: the columns and rows that are dark over most of the image.
    columns, rows = np.flatnonzero(dark.sum(0) > height / 2), np.flatnonzero(dark.sum(1) > width / 2)
    (x0, x1), (y0, y1) = (columns[0], columns[-1]), (rows[0], rows[-1])
    # Left of the frame (past the rotated axis label) one band of ink per name, with white between neighbours;
    # below it the same across the columns: all 100 names drawn on both axes, none touching the next.
    assert ink_runs(dark[y0 + 1 : y1, 24 : x0 - 1].any(1)) == 100
    assert ink_runs(dark[y1 + 2 : height - 22, x0 + 1 : x1].any(0)) == 100  # above the axis label


def ink_runs(inked: np.ndarray) -> int:
    """How many separate runs of True a 1-d mask holds."""
    return int(inked[0]) + int(np.count_nonzero(inked[1:] & ~inked[:-1]))


def test_a_multi_label_run_draws_a_2x2_confusion_matrix_per_label_side_by_side(in_tmp):
    from PIL import Image

    experiment = str(CONFIGS / "experiment" / "digits_multilabel.yaml")
    cli("fit", "--config", DEFAULT, "--config", experiment, *QUICK, "--test_after_fit=false")
    run = in_tmp / "logs" / "digits_multilabel" / "version_0"
    figures = []
    for f in run.glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(f), size_guidance={"images": 0}).Reload()
        if "val/confusion_matrix" in acc.Tags()["images"]:
            figures += acc.Images("val/confusion_matrix")
    assert len(figures) == 1  # at the end of fit
    image = Image.open(io.BytesIO(figures[0].encoded_image_string))
    assert image.width > 3 * image.height  # three labels, one small matrix each, in a row
    hparams = EventAccumulator(str(run)).Reload().Tags()["scalars"]
    assert {"hp/val_f1_even", "hp/val_auroc_has_loop", "hp/val_exact_match"} <= set(hparams)
