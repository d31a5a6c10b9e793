"""proj: a PyTorch Lightning project template."""

__version__ = "0.1.0"
