"""Repeats over seeds: `python -m proj repeat --config configs/default.yaml --seeds 0 1 2` (command.py).
Docs: docs/extras/repeat.md."""

COMMANDS = {"repeat": ("proj.extras.repeat.command", "one config over several seeds: mean, std and 95% interval")}
