"""MLflow and W&B loggers in the template's run directory (run_directory_loggers.py).
Presets: configs/logger/mlflow.yaml, wandb.yaml, several.yaml. Docs: docs/extras/loggers.md."""

from proj.extras.loggers.run_directory_loggers import MLFlowRunLogger, WandbRunLogger

__all__ = ["MLFlowRunLogger", "WandbRunLogger"]
