"""Lightning's tuner on the real config: `python -m proj lr_find` and `python -m proj batch_size_find`
(finders.py). Docs: docs/extras/finders.md."""

COMMANDS = {
    "lr_find": ("proj.extras.finders.finders", "sweep the lr, write the suggestion as an override"),
    "batch_size_find": ("proj.extras.finders.finders", "the largest batch size that fits, as an override"),
}
