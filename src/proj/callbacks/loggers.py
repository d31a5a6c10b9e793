"""The run's loggers: MLflow and W&B in the template's run directory, and what each logger can show.

The template's views (confusion matrix, sample grid, prediction scatter, hyper-parameters, the per-step lr)
call the functions here, never a logger directly: each goes to every logger that accepts it (TensorBoard,
MLflow, W&B), and a logger that cannot take it (CSV has no images) is named once, in one info line.
"""

from __future__ import annotations

import os
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as L
import numpy as np
from lightning.pytorch.loggers import Logger, MLFlowLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_info

RUN_DIR_TAG = "proj.run_dir"  # the MLflow tag that ties an MLflow run to its run directory


def next_version(root: Path) -> int:
    """The first free `version_<n>` under logs/<name>/, counted as TensorBoard and CSV count it."""
    numbers = [int(p.name[8:]) for p in root.glob("version_*") if p.is_dir() and p.name[8:].isdigit()]
    return max(numbers, default=-1) + 1


class RunDirectory:
    """logs/<name>/version_<n>/ for a logger whose records live elsewhere (a database, a W&B run).

    Lightning puts config.yaml into `logger.save_dir` and checkpoints into `save_dir/name/version/checkpoints`
    for any logger but TensorBoard and CSV: so save_dir is the run directory and name and version are empty.
    The init arguments save_dir / name / version mean what they mean for TensorBoard, so `--resume`, the
    experiment configs' `trainer.logger.init_args.name` and test-into-the-run work unchanged."""

    def _set_run_directory(self, save_dir: str | os.PathLike, name: str, version: int | str | None) -> None:
        self._run_root, self._run_name, self._run_version = Path(save_dir) / name, name, version

    @property
    def log_dir(self) -> str:
        if self._run_version is None:  # fixed at the first look: config.yaml is written there at setup
            self._run_version = next_version(self._run_root)
        version = self._run_version if isinstance(self._run_version, str) else f"version_{self._run_version}"
        return str(self._run_root / version)

    @property
    def save_dir(self) -> str:
        return self.log_dir

    @property
    def name(self) -> str:
        return ""

    @property
    def version(self) -> str:
        return ""


class MLFlowRunLogger(RunDirectory, MLFlowLogger):
    """Lightning's MLFlowLogger with the run directory: config.yaml and checkpoints in logs/<name>/version_<n>/,
    metrics and parameters in an MLflow store (a local SQLite file by default: mlflow 3.17 refuses the plain
    file store unless MLFLOW_ALLOW_FILE_STORE=true), the MLflow experiment named after `name` and the run
    after its directory. A run resumed into its directory (or tested into <run>/test) continues its MLflow run.
    See it with `mlflow ui --backend-store-uri sqlite:///logs/mlflow.db`."""

    def __init__(
        self,
        save_dir: str = "logs",
        name: str = "default",
        version: int | str | None = None,
        tracking_uri: str | None = os.getenv("MLFLOW_TRACKING_URI") or "sqlite:///logs/mlflow.db",
        artifact_location: str | None = None,
        experiment_name: str | None = None,
        tags: dict[str, Any] | None = None,
        log_model: Literal[True, False, "all"] = False,
        prefix: str = "",
        synchronous: bool | None = None,
    ) -> None:
        """artifact_location: where a new experiment keeps its artifacts (default <save_dir>/mlartifacts)."""
        self._set_run_directory(save_dir, name, version)
        run_dir = Path(self.log_dir).resolve()
        # An existing directory (resumed, or <run>/test): continue the MLflow run of it or of its parent.
        run_id = find_run(tracking_uri, run_dir, run_dir.parent) if version is not None else None
        super().__init__(
            experiment_name=experiment_name or name,
            run_name=f"{name}/{run_dir.name}",
            tracking_uri=tracking_uri,
            tags={**(tags or {}), RUN_DIR_TAG: str(run_dir)},
            log_model=log_model,
            prefix=prefix,
            artifact_location=artifact_location or str(Path(save_dir) / "mlartifacts"),
            run_id=run_id,
            synchronous=synchronous,
        )
        self.prefix = prefix


def find_run(tracking_uri: str | None, *run_dirs: Path) -> str | None:
    """The id of the MLflow run tagged with the first of these run directories that has one."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    for run_dir in run_dirs:
        found = client.search_runs(experiments, f"tags.`{RUN_DIR_TAG}` = '{run_dir}'", max_results=1)
        if found:
            return found[0].info.run_id
    return None


class WandbRunLogger(RunDirectory, WandbLogger):
    """Lightning's WandbLogger with the run directory, offline by default (no account, no network): the W&B
    run's files go to logs/<name>/version_<n>/wandb/, uploaded later with `wandb sync <that folder>/offline-run-*`.
    A resumed run starts a new W&B run in the same directory."""

    def __init__(
        self,
        save_dir: str = "logs",
        name: str = "default",
        version: int | str | None = None,
        project: str = "proj",
        offline: bool = True,
        log_model: Literal["all"] | bool = False,
        prefix: str = "",
        tags: list[str] | None = None,
    ) -> None:
        self._set_run_directory(save_dir, name, version)
        run_dir = Path(self.log_dir)
        super().__init__(
            name=str(Path(name) / run_dir.name),
            save_dir=str(run_dir),
            offline=offline,
            project=project,
            log_model=log_model,
            prefix=prefix,
            tags=tags,
        )


# --- what each logger can show ---------------------------------------------------------------------------

_TOLD: weakref.WeakSet[Logger] = weakref.WeakSet()  # loggers already named as taking no images


def rank_zero_loggers(trainer: L.Trainer) -> list[Logger]:
    return list(trainer.loggers) if trainer.is_global_zero else []


def takes_images(logger: Logger) -> bool:
    return isinstance(logger, TensorBoardLogger | MLFlowLogger | WandbLogger)


def log_image(trainer: L.Trainer, tag: str, image: np.ndarray, step: int) -> None:
    """An (H, W, 3) uint8 image into every logger that shows images, each at `step`."""
    for logger in rank_zero_loggers(trainer):
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(tag, image, step, dataformats="HWC")
        elif isinstance(logger, MLFlowLogger):  # time-stepped: the MLflow UI shows it with a step slider
            logger.experiment.log_image(logger.run_id, image, key=tag, step=step)
        elif isinstance(logger, WandbLogger):
            logger.log_image(tag, [image], step=step)
        elif logger not in _TOLD:
            _TOLD.add(logger)
            rank_zero_info(f"{type(logger).__name__} shows no images: {tag} and the other figures are not in it.")


def log_figure(trainer: L.Trainer, tag: str, figure: Any, step: int) -> None:
    """A matplotlib Figure, drawn once into pixels, into every logger that shows images."""
    loggers = rank_zero_loggers(trainer)
    if not any(takes_images(lg) for lg in loggers):
        log_image(trainer, tag, np.zeros((1, 1, 3), np.uint8), step)  # names the loggers that take none, once
        return
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    log_image(trainer, tag, np.asarray(canvas.buffer_rgba())[..., :3].copy(), step)


def log_hyperparams(trainer: L.Trainer, params: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
    """Flat hyper-parameters into every logger; TensorBoard also gets the metrics its HPARAMS tab compares by."""
    for logger in rank_zero_loggers(trainer):
        if isinstance(logger, TensorBoardLogger):
            tensorboard_hparams(logger, params, metrics)
        elif isinstance(logger, MLFlowLogger):
            logger.log_hyperparams(new_mlflow_params(logger, params))
        else:
            logger.log_hyperparams(dict(params))


def tensorboard_hparams(logger: TensorBoardLogger, params: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
    """The HPARAMS tab's session of this run, without the experiment summary Lightning adds: TensorBoard takes one
    run's experiment summary for all (hyper-parameters sorted by name, the first five shown: accumulate_grad_batches
    to class_weights); without it, it builds the table from every run and shows first the ones that differ."""
    from torch.utils.tensorboard.summary import hparams

    logger.log_hyperparams(dict(params))  # hparams.yaml (no metrics: Lightning writes no summary)
    logger.log_metrics(dict(metrics), step=0)  # the metric columns, filled at the end of fit and test
    _, session_start, session_end = hparams(dict(params), dict(metrics))
    for summary in (session_start, session_end):
        logger.experiment.file_writer.add_summary(summary, 0)


def new_mlflow_params(logger: MLFlowLogger, params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters a continued MLflow run (resumed, tested) does not hold yet: MLflow refuses to change one."""
    old = logger.experiment.get_run(logger.run_id).data.params
    changed = [f"{k}={old[k]} (now {v})" for k, v in params.items() if k in old and old[k] != str(v)[:250]]
    if changed:
        rank_zero_info(f"MLflow keeps a run's first parameters: {', '.join(changed)}.")
    return {k: v for k, v in params.items() if k not in old}


def log_artifact(trainer: L.Trainer, path: Path) -> None:
    """A file of the run directory (config.yaml) into the loggers that keep files elsewhere (MLflow, W&B)."""
    for logger in rank_zero_loggers(trainer):
        if isinstance(logger, MLFlowLogger):
            logger.experiment.log_artifact(logger.run_id, str(path))
        elif isinstance(logger, WandbLogger):  # an artifact: W&B keeps a config.yaml of its own in the run's files
            import wandb

            artifact = wandb.Artifact(f"{path.stem}-{logger.experiment.id}", type=path.stem)
            artifact.add_file(str(path))
            logger.experiment.log_artifact(artifact)


def log_steps(trainer: L.Trainer, rows: Mapping[int, Mapping[str, float]]) -> None:
    """Values of several steps, each at its own step, in one write where the logger allows (MLflow's log_batch)."""
    for logger in rank_zero_loggers(trainer):
        if isinstance(logger, MLFlowRunLogger) and not logger.prefix:
            from mlflow.entities import Metric

            stamp = int(time.time() * 1000)
            metrics = [Metric(k, v, stamp, s) for s, row in rows.items() for k, v in row.items()]
            for i in range(0, len(metrics), 1000):  # MLflow's limit per batch
                logger.experiment.log_batch(logger.run_id, metrics=metrics[i : i + 1000])
        else:
            for step, row in rows.items():
                logger.log_metrics(dict(row), step=step)
