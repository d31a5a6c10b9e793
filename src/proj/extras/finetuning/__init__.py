"""Freeze part of the net for the first epochs of a fine-tuning run (freeze.py); a new run starts from another
run's weights with the core's `fit --init_from`. Preset: configs/experiment/finetune_imbalanced.yaml.
Docs: docs/extras/finetuning.md."""

from proj.extras.finetuning.freeze import Freeze

__all__ = ["Freeze"]
