"""Weight averaging that every use of the model sees: EMA and SWA (weight_averaging.py).
Presets: configs/callbacks/ema.yaml, swa.yaml. Docs: docs/extras/averaging.md."""

from proj.extras.averaging.weight_averaging import EMA, SWA

__all__ = ["EMA", "SWA"]
