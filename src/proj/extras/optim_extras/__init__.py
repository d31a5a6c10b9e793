"""Training techniques from the pytorch-optimizer package, fitted to the template: SAM and Lookahead as optimizers
named by class_path in an optim stage (wrappers.py), adaptive gradient clipping as a callback (agc.py).
Presets: configs/optim/sam.yaml, lookahead.yaml, configs/callbacks/agc.yaml. Docs: docs/extras/optim_extras.md."""

from proj.extras.optim_extras.agc import AdaptiveGradientClipping
from proj.extras.optim_extras.wrappers import SAM, Lookahead

__all__ = ["SAM", "AdaptiveGradientClipping", "Lookahead"]
