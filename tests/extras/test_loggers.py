"""The loggers extra: MLflow and W&B runs in the template's run directory, read back from what they wrote."""

import contextlib
import http.server
import importlib.util
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from conftest import COMPARED_HPARAMS, CONFIGS, DEFAULT, QUICK, cli_in, usage_error
from helpers import free_port

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


@contextlib.contextmanager
def not_mlflow(status: int, body: bytes) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 that answers every GET with `status` and `body` (not as MLflow does)."""

    class Answer(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            self.end_headers()
            self.wfile.write(body)

    server = http.server.HTTPServer(("127.0.0.1", 0), Answer)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


STORES = {  # a tracking_uri MLflow cannot use: (how to make it in the working directory, what the error names)
    "folder_is_a_file": (lambda: Path("afile").touch() or "sqlite:///afile/mlflow.db", "afile is a file, not a folder"),
    "cannot_be_created": (lambda: "sqlite:////proc/proj/mlflow.db", "cannot use it as the MLflow database"),  # any user
    "a_folder": (lambda: Path("logs").mkdir() or "sqlite:///logs", "Is a directory"),
    "not_a_database": (
        lambda: Path("t.csv").write_text("a,b\n") and "sqlite:///t.csv",
        "t.csv is not an SQLite database",
    ),
    "two_slashes": (lambda: "sqlite://logs/mlflow.db", "a file takes three slashes"),
    "no_server": (lambda: f"http://127.0.0.1:{free_port()}", "no MLflow server answers"),
}


@pytest.mark.parametrize("case", STORES)
def test_a_store_mlflow_cannot_use_is_refused_at_once_naming_the_uri(case, in_tmp, capsys):
    """MLflow retried such a store for two minutes, then printed a garbled Union error (or a traceback)."""
    pytest.importorskip("mlflow")
    make, reason = STORES[case]
    uri = make()
    line = usage_error(capsys, "fit", "--config", DEFAULT, "--config", str(CONFIGS / "logger" / "mlflow.yaml"),
                       f"--trainer.logger.init_args.tracking_uri={uri}", *QUICK)  # fmt: skip
    assert "trainer.logger" in line and "tracking_uri" in line and reason in line, line
    assert "Expected a" not in line and "sqlite:///" in line, line  # no leftovers of the Union; the fix named
    assert not Path("logs", "default").exists()  # refused before a run directory was made


NOT_MLFLOW = {  # (status, body, what the line says); each once a traceback at setup, after the model was built
    "not_found": (404, b"", "answers 404 to MLflow's API"),  # another service on that port (TensorBoard, say)
    "health_only": (200, b"OK", "not with MLflow's JSON"),  # a server whose every path says OK, as /health does
    "login": (401, b"<html>log in</html>", "asks for credentials (401): set MLFLOW_TRACKING_USERNAME"),
}


@pytest.mark.parametrize("case", NOT_MLFLOW)
def test_a_server_that_is_not_mlflow_is_refused(case, in_tmp, capsys, monkeypatch):
    pytest.importorskip("mlflow")
    status, body, said = NOT_MLFLOW[case]
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    with not_mlflow(status, body) as uri:
        line = usage_error(capsys, "fit", "--config", DEFAULT, "--config", str(CONFIGS / "logger" / "mlflow.yaml"),
                           f"--trainer.logger.init_args.tracking_uri={uri}", *QUICK)  # fmt: skip
    assert f"tracking_uri={uri}" in line and said in line, line
