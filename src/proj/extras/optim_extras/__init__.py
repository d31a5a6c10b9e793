"""Training techniques from the pytorch-optimizer package, fitted to the template: SAM and Lookahead as optimizers
named by class_path in an optim stage (wrappers.py), adaptive gradient clipping as a callback (agc.py).
Presets: configs/optim/sam.yaml, lookahead.yaml, configs/callbacks/agc.yaml. Docs: docs/extras/optim_extras.md.

Imported on first use (a module __getattr__): `python -m proj` reads every extra's __init__.py to find its
subcommands, and an install without the optim extra (a serving image) has no pytorch_optimizer to import."""

import importlib
from typing import Any

WHERE = {"SAM": "wrappers", "Lookahead": "wrappers", "AdaptiveGradientClipping": "agc"}
__all__ = list(WHERE)


def __getattr__(name: str) -> Any:
    if name not in WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{WHERE[name]}"), name)
