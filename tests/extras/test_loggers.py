"""The loggers extra: MLflow and W&B runs in the template's run directory, read back from what they wrote."""

import importlib.util
from pathlib import Path

import pytest
import yaml

from conftest import COMPARED_HPARAMS, CONFIGS, DEFAULT, QUICK, cli_in

pytestmark = pytest.mark.xdist_group("loggers")
VIEWS = importlib.util.find_spec("proj.extras.tensorboard_views") is not None  # the figures and HPARAMS


@pytest.fixture(scope="module")
def mlflow_run(tmp_path_factory):
    pytest.importorskip("mlflow")
    workdir = tmp_path_factory.mktemp("mlflow")
    result = cli_in(workdir, "fit", "--config", DEFAULT, "--config", str(CONFIGS / "logger" / "mlflow.yaml"), *QUICK)
    return workdir, result


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
    if not VIEWS:  # what follows is the tensorboard_views extra's, drawn into every logger that shows it
        return
    for key, value in COMPARED_HPARAMS.items():
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
