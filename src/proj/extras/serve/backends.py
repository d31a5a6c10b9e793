"""What runs the model: the ONNX Runtime export or the PyTorch checkpoint's Deployable.

Both take the raw input batch and return probabilities (classification) or values in the target's units
(regression): the run's scaling and standardisation are inside the model (proj.models.deployable.Deployable),
never in the server. A backend is built in the server's process and loaded there (--workers 0) or pickled into
each model process (spawned), where `load` creates what cannot be pickled (an onnxruntime session) and sets the
thread count: several processes on a few cores would otherwise each start one thread per core and fight.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch is imported only where a PyTorch model runs: an ONNX model process starts without it
    from torch import nn


class OnnxBackend:
    name = "onnx"

    def __init__(self, path: Path, threads: int = 1):
        self.path, self.threads, self.session = Path(path), threads, None
        self.file = self.path  # what the server's identity hashes

    def load(self) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = self.threads
        # ONNX Runtime's threads spin between calls by default, burning the cores the HTTP process needs to parse
        # the next requests: not spinning serves more requests / s with batching on (benchmarks/serve.py's load,
        # run with each setting, when a worker had two threads; one thread has no pool to spin).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])

    def __call__(self, x: np.ndarray | list[np.ndarray]) -> np.ndarray:
        names = [i.name for i in self.session.get_inputs()]
        return self.session.run(None, dict(zip(names, model_inputs(x), strict=True)))[0]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "session": None}  # a session is not picklable: `load` makes one per worker


class TorchBackend:
    name = "pytorch"

    def __init__(self, module: nn.Module, threads: int = 1, file: Path | None = None):
        self.module, self.threads, self.file = module.eval(), threads, file  # file: the checkpoint it came from

    def load(self) -> None:
        import torch

        torch.set_num_threads(self.threads)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.module(*(torch.from_numpy(a) for a in model_inputs(x))).numpy()


def model_inputs(x: np.ndarray | list[np.ndarray]) -> tuple[np.ndarray, ...]:
    """A batch as the model takes it: the array, or sequences (a list of (frames, features)) padded with zeros to
    the longest, with their lengths."""
    if isinstance(x, np.ndarray):
        return (x,)
    lengths = np.array([len(s) for s in x], dtype=np.int64)
    values = np.zeros((len(x), int(lengths.max()), *x[0].shape[1:]), dtype=x[0].dtype)
    for i, s in enumerate(x):
        values[i, : len(s)] = s
    return values, lengths


def outputs_to_json(facts: dict[str, Any], outputs: np.ndarray) -> list[dict[str, Any]]:
    """One prediction per sample: the class and every class's probability, the labels set and every label's
    probability, or the values by target name."""
    if facts["task"] == "classification":
        names = facts["classes"]
        return [
            {"class": names[int(p.argmax())], "probabilities": dict(zip(names, map(float, p), strict=True))}
            for p in outputs
        ]
    if facts["task"] == "multilabel":  # the labels whose probability reaches their threshold
        names, thresholds = facts["classes"], np.asarray(facts["thresholds"])
        return [
            {
                "labels": [n for n, on in zip(names, p >= thresholds, strict=True) if on],
                "probabilities": dict(zip(names, map(float, p), strict=True)),
            }
            for p in outputs
        ]
    if facts["task"] == "regression":
        names = facts["target_names"]
        return [dict(zip(names, map(float, v.reshape(-1)), strict=True)) for v in outputs]
    return [{"outputs": v.tolist()} for v in outputs]
