"""`python -m proj new ../mynet --name mynet`: copy the template into a new, renamed project (copy_template.py).
Docs: docs/extras/new_project.md."""

COMMANDS = {"new": ("proj.extras.new_project.copy_template", "copy the template into a new, renamed project")}
