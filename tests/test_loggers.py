"""Logger presets (configs/logger/) read back from what they wrote, and the views a person reads in them."""

import csv
import logging
from pathlib import Path

import numpy as np
import pytest
import yaml

from test_default_run import reference_lrs

from conftest import CONFIGS, DEFAULT, QUICK, cli_in

pytestmark = pytest.mark.xdist_group("loggers")

# The keys people compare runs by, with the default config's values where it sets them.
COMPARED = {
    "optimizer": "AdamW", "lr": 3e-3, "weight_decay": 0.05, "schedule": "CosineAnnealingLR", "warmup_steps": 50,
    "interval": "step", "batch_size": 64, "net": "SmallCNN", "net.widths": "[32, 64]", "max_epochs": 2,
    "precision": "32-true", "gradient_clip_val": 1.0, "accumulate_grad_batches": 1, "sampler": "none",
    "augmentation": "none",
}  # fmt: skip


def fit_with(tmp_path_factory, preset: str):
    workdir = tmp_path_factory.mktemp(preset)
    result = cli_in(workdir, "fit", "--config", DEFAULT, "--config", str(CONFIGS / "logger" / f"{preset}.yaml"), *QUICK)
    return workdir, result


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory):
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.INFO)
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("lightning.pytorch").addHandler(handler)
    try:
        workdir, result = fit_with(tmp_path_factory, "csv")
    finally:
        logging.getLogger("lightning.pytorch").removeHandler(handler)
    return workdir / "logs" / "default" / "version_0", result, [r.getMessage() for r in records]


@pytest.fixture(scope="module")
def mlflow_run(tmp_path_factory):
    pytest.importorskip("mlflow")
    workdir, result = fit_with(tmp_path_factory, "mlflow")
    return workdir, result


def test_csv_preset_writes_metrics_and_readable_hyperparameters_into_the_run_directory(csv_run):
    run_dir, result, _ = csv_run
    assert (run_dir / "config.yaml").is_file() and list((run_dir / "checkpoints").glob("best-*.ckpt"))
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    test_acc = [float(r["test/acc"]) for r in rows if r.get("test/acc")]
    assert test_acc == [pytest.approx(float(result.trainer.callback_metrics["test/acc"]))]
    assert sum(1 for r in rows if r.get("val/loss")) == 2  # one per epoch
    hparams = yaml.safe_load((run_dir / "hparams.yaml").read_text())
    for key, value in COMPARED.items():
        assert hparams.get(key) == value, (key, hparams.get(key))
    text = yaml.safe_dump(hparams)
    assert "_class_path" not in text and "_instantiator" not in text and "init_args" not in text


def test_the_lr_of_every_optimizer_step_is_logged_not_only_every_log_every_n_steps(csv_run):
    run_dir, result, _ = csv_run
    with open(run_dir / "metrics.csv") as f:
        logged = [(int(r["step"]), float(r["lr/default"])) for r in csv.DictReader(f) if r.get("lr/default")]
    steps = result.trainer.global_step  # 6, fewer than log_every_n_steps=10: Lightning's monitor logs none
    assert [step for step, _ in logged] == list(range(steps))
    expected = reference_lrs(total_steps=steps, steps=steps)  # torch's own warmup + cosine, stepped by hand
    assert [lr for _, lr in logged] == pytest.approx(expected[:steps], rel=1e-6)


def test_a_logger_without_images_is_named_once(csv_run):
    _, _, messages = csv_run
    told = [m for m in messages if "CSVLogger shows no images" in m]
    assert len(told) == 1, messages  # the confusion matrix and the sample grid were both skipped


@pytest.mark.slow
def test_mlflow_preset_store_holds_metrics_params_config_and_figures(mlflow_run):
    from mlflow.tracking import MlflowClient

    workdir, result = mlflow_run
    run_dir = workdir / "logs" / "default" / "version_0"
    assert (run_dir / "config.yaml").is_file() and (run_dir / "checkpoints" / "last.ckpt").exists()
    client = MlflowClient(f"sqlite:///{workdir}/logs/mlflow.db")  # what `mlflow ui --backend-store-uri` reads
    (experiment,) = [e for e in client.search_experiments() if e.name == "default"]
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "default/version_0" and run.info.status == "FINISHED"
    assert run.data.metrics["test/acc"] == pytest.approx(float(result.trainer.callback_metrics["test/acc"]))
    assert {"val/loss", "val/acc", "train/loss_epoch"} <= set(run.data.metrics)
    lrs = client.get_metric_history(run.info.run_id, "lr/default")
    assert [m.step for m in lrs] == list(range(result.trainer.global_step))  # every optimizer step
    for key, value in COMPARED.items():
        assert run.data.params[key] == str(value), key
    assert not any("_class_path" in k or "_instantiator" in k for k in run.data.params)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "config.yaml" in artifacts
    stored = Path(client.download_artifacts(run.info.run_id, "config.yaml", str(workdir)))
    config = yaml.safe_load(stored.read_text())
    assert config == yaml.safe_load((run_dir / "config.yaml").read_text())  # the resolved config, as written
    images = [a.path for a in client.list_artifacts(run.info.run_id, "images")]
    for tag in ("val/confusion_matrix", "train/augmented_samples"):  # MLflow names the files after the key
        assert any(tag.replace("/", "~") + "+step" in path for path in images), images


def test_confusion_matrix_names_every_one_of_100_classes_on_both_axes_without_overlap():
    from proj.callbacks.confusion_matrix import confusion_image

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
