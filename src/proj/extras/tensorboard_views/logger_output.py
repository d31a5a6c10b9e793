"""What each logger can show: the template's views call these, never a logger directly.

Each figure or value goes to every logger that accepts it (TensorBoard, MLflow, W&B); a logger that cannot take it
(CSV has no images) is named once, in one info line.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import numpy as np
from lightning.pytorch.loggers import Logger, MLFlowLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_info

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


def log_table(trainer: L.Trainer, tag: str, header: list[str], rows: list[list[str]], step: int) -> None:
    """A table of text into every logger that shows text: TensorBoard's TEXT tab (markdown), MLflow (a JSON table
    artifact), W&B (a table)."""
    for logger in rank_zero_loggers(trainer):
        if isinstance(logger, TensorBoardLogger):
            cells = [[c.replace("|", "\\|").replace("\n", " ") for c in row] for row in [header, *rows]]
            lines = [" | ".join(cells[0]), " | ".join("---" for _ in header), *(" | ".join(r) for r in cells[1:])]
            logger.experiment.add_text(tag, "\n".join(lines), step)
        elif isinstance(logger, MLFlowLogger):
            columns = {name: [row[i] for row in rows] for i, name in enumerate(header)}
            logger.experiment.log_table(logger.run_id, columns, f"{tag.replace('/', '_')}_{step}.json")
        elif isinstance(logger, WandbLogger):
            logger.log_text(key=tag, columns=header, data=rows, step=step)
        elif logger not in _TOLD:
            _TOLD.add(logger)
            rank_zero_info(f"{type(logger).__name__} shows no text tables: {tag} is not in it.")


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
