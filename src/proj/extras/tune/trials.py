"""What every search backend shares: how one trial's config is made from the base config, and how it is fit."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from lightning.pytorch.callbacks import Callback

from proj.extras.tune.space import SearchConfig, apply, set_dotted

# Fits one config (`--config trial.yaml`) with extra callbacks, in this process. The command line hands its
# own (proj.cli.run.run_fit) to the backends, which therefore never import the command line.
FitFn = Callable[[list[str], Sequence[Callback]], Any]


def trial_config(search: SearchConfig, base: dict[str, Any], params: dict[str, Any], name: str) -> dict[str, Any]:
    """The base config with the trial's parameters, logging into logs/<study>/<trial name>/, without a test."""
    config = apply(base, params)
    set_dotted(config, "trainer.logger", {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {"save_dir": "logs", "name": search.study_name, "version": name, "default_hp_metric": False},
    })  # fmt: skip
    config["test_after_fit"] = False  # the test split is for the final model, not for choosing it
    config["trainer"]["enable_progress_bar"] = False
    config["trainer"]["enable_model_summary"] = False
    return config
