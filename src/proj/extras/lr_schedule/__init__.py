"""`python -m proj schedule`: the learning rate of every optimizer step of a run, drawn before training
(preview.py). Docs: docs/extras/lr_schedule.md."""

COMMANDS = {"schedule": ("proj.extras.lr_schedule.preview", "draw the lr of every step of a run, before training")}
