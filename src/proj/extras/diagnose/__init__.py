"""Diagnose a run: `python -m proj diagnose RUN` (command.py) reads what HealthMonitor (health.py) and Evaluation
(evaluation.py) wrote into the run directory, and prints findings, each with its evidence, its likely cause and
the template's fix as an override file; `--try` trains the fix and compares it with the original.
Docs: docs/extras/diagnose.md."""

from proj.extras.diagnose.evaluation import Evaluation
from proj.extras.diagnose.health import HealthMonitor

__all__ = ["Evaluation", "HealthMonitor"]

COMMANDS = {"diagnose": ("proj.extras.diagnose.command", "what went wrong in a run, and the template's fix for it")}
