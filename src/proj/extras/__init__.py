"""The extras: everything beyond the core's fit / validate / test / predict. Each folder here is one extra, with
its config presets (configs/), its tests (tests/extras/) and its docs page (docs/extras/). Delete an extra's
files and the rest still runs: the core never imports an extra (`make lint` checks it), and the subcommands of
`python -m proj` are found here by proj.cli.registry.

An extra's __init__.py says what it adds and stays light (it is imported by `python -m proj --help`):
    COMMANDS = {"name": ("proj.extras.<extra>.<module>", "one line of help")}: subcommands; the module has a
        `command(name, args)` function.
    RUN_COMMAND_RECORDER = "proj.extras.<extra>.<module>:<function>": a context manager `(run_dir, argv)` around
        every subcommand that works on a run (the run record's entry in run.json).
Classes named by class_path in configs (callbacks, loggers) are exported by the extra's __init__.py.
"""
