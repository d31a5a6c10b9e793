"""What the command line prints besides Lightning's own lines, and which of Lightning's it leaves out: a first run
shows the net, the progress, why it stopped, the results and where the run went."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning.pytorch as L
from lightning.pytorch.utilities import rank_zero_info


class QuietLightning(logging.Filter):
    """Lightning's log lines that say nothing about the run (advertisements, and a note that the config's model
    summary replaces Lightning's default one), left out of what the command line prints."""

    NOISE = ("💡 Tip:", "Trainer already configured with model summary callbacks")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.NOISE)


def quiet_lightning() -> None:
    """Filter QuietLightning's lines from Lightning's log, once (Lightning logs them through its rank-zero logger)."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        log = logging.getLogger(name)
        if not any(isinstance(f, QuietLightning) for f in log.filters):
            log.addFilter(QuietLightning())


def say_where_the_run_went(trainer: L.Trainer, what: str = "The run") -> None:
    run_dir = Path(trainer.log_dir) if trainer.logger is not None and trainer.log_dir else None
    if not (run_dir and trainer.is_global_zero):
        return
    if what != "The run":  # validate / test / predict: into <run>/<subcommand>/
        rank_zero_info(
            f"{what} is in {run_dir}/" if trainer.state.fn != "predict" else f"Predictions are in {run_dir}/"
        )
        return
    best = getattr(trainer.checkpoint_callback, "best_model_path", "")
    files = f"config.yaml, checkpoints/{Path(best).name}" if best else "config.yaml"
    rank_zero_info(f"The run is in {run_dir}/: {files}, and the logs (make tensorboard)")
