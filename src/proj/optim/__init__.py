"""Optimizers, parameter groups and learning-rate schedules, built from a model's `optim` config.

- config.py: the `optim` config and its validation (before any training);
- classes.py: `{class_path, init_args}` specs for optimizers and schedulers;
- groups.py: parameter groups, lr scaling, fused kernels, the L1 penalty (functions of the model);
- schedulers.py: horizons, chains, warmup (functions of numbers);
- stages.py: the stage of an epoch and what configure_optimizers returns for it (reads the trainer).
"""

from proj.optim.classes import import_class
from proj.optim.config import OptimConfig, Stage, check_stages_start_in_run, parse_stages
from proj.optim.groups import build_optimizer, l1_penalty, param_groups
from proj.optim.schedulers import check_resumed_horizons, horizons
from proj.optim.stages import TrainerFacts, configure_stage, stage_at

__all__ = [
    "OptimConfig",
    "Stage",
    "TrainerFacts",
    "build_optimizer",
    "check_resumed_horizons",
    "check_stages_start_in_run",
    "configure_stage",
    "horizons",
    "import_class",
    "l1_penalty",
    "param_groups",
    "parse_stages",
    "stage_at",
]
