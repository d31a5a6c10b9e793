"""Export: `python -m proj export` writes a checkpoint as ONNX or TorchScript (int8 on request), checked against
PyTorch and measured (command.py; the formats in formats.py). Docs: docs/extras/export.md."""

COMMANDS = {"export": ("proj.extras.export.command", "ONNX / TorchScript (int8) of a checkpoint, checked")}
