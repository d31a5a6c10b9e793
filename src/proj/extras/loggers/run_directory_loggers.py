"""MLflow and W&B loggers whose runs live in the template's run directory, logs/<name>/version_<n>/, as
TensorBoard's do: config.yaml, checkpoints, `--resume` and test-into-the-run work the same with every logger.
Presets: configs/logger/mlflow.yaml, wandb.yaml, several.yaml.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Literal

from lightning.pytorch.loggers import MLFlowLogger, WandbLogger

from proj.extras.loggers.mlflow_store import RUN_DIR_TAG, absolute_sqlite, check_store, find_run


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
        tracking_uri = absolute_sqlite(tracking_uri)
        check_store(tracking_uri)
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


class WandbRunLogger(RunDirectory, WandbLogger):
    """Lightning's WandbLogger with the run directory, offline by default (no account, no network): the W&B
    run's files go to logs/<name>/version_<n>/wandb/, uploaded later with `wandb sync <that folder>/offline-run-*`.
    A resumed run starts a new W&B run in the same directory; a run into another directory in the same process (a
    fold of cv, a trial of tune) starts a W&B run of its own."""

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
        finish_another_wandb_run(run_dir)
        super().__init__(
            name=str(Path(name) / run_dir.name),
            save_dir=str(run_dir),
            offline=offline,
            project=project,
            log_model=log_model,
            prefix=prefix,
            tags=tags,
        )


def finish_another_wandb_run(run_dir: Path) -> None:
    """End the W&B run of another run directory still open in this process: Lightning leaves a run open after fit
    (its test may log into it), and W&B would hand it to the next logger, which wrote the next fold into it."""
    wandb = sys.modules.get("wandb")  # never imported: no run is open
    current = getattr(wandb, "run", None) if wandb is not None else None
    if current is not None and Path(run_dir).resolve() not in Path(current.dir).resolve().parents:
        wandb.finish()
