"""run.json and model_card.md in every run directory (record.py; the facts in facts.py, the card in
model_card.py). The RunRecord callback is in configs/default.yaml; the template's subcommands that work on a run
are recorded too (RUN_COMMAND_RECORDER, found by proj.cli.registry). Docs: docs/extras/run_record.md."""

from proj.extras.run_record.record import RunRecord

__all__ = ["RunRecord"]

RUN_COMMAND_RECORDER = "proj.extras.run_record.record:tool_command"
