"""Deployment: export (ONNX / TorchScript / int8) of a trained run."""
