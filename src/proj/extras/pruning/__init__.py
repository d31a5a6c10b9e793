"""Gradual magnitude pruning while training (gradual_pruning.py). Preset: configs/callbacks/pruning.yaml.
Docs: docs/extras/pruning.md."""

from proj.extras.pruning.gradual_pruning import GradualPruning

__all__ = ["GradualPruning"]
