"""LightningModules: each holds its network together with its loss, metrics and configure_optimizers."""

from proj.models.classifier import Classifier

__all__ = ["Classifier"]
