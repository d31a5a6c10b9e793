"""Weight averaging that every use of the model sees: EMA and SWA (weight_averaging.py), and the average of the last
k epochs' weights (checkpoint_averaging.py). Presets: configs/callbacks/ema.yaml, swa.yaml, avg_checkpoints.yaml.
Docs: docs/extras/averaging.md."""

from proj.extras.averaging.checkpoint_averaging import AverageCheckpoints
from proj.extras.averaging.weight_averaging import EMA, SWA

__all__ = ["EMA", "SWA", "AverageCheckpoints"]
