"""The export formats: a Deployable (proj.models.deployable: raw inputs in, predictions out) written as ONNX or
TorchScript, optionally quantised to int8, and measured: size, CPU latency and the test score of each.

The exported model takes raw inputs as the data module stores them with any batch size; `python -m proj export`
(command.py) drives this.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from proj.models.deployable import Deployable, output_name

FORMATS = ("onnx", "torchscript")
TOLERANCE = 1e-4


@dataclass
class SequenceInputs:
    """Sequences as an exported model takes them: values (batch, time, features) padded, and lengths (batch,).
    Sliced like an array: a slice keeps the steps up to its own longest sequence."""

    values: np.ndarray
    lengths: np.ndarray

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, rows: slice) -> SequenceInputs:
        lengths = self.lengths[rows]
        return SequenceInputs(self.values[rows, : int(lengths.max())], lengths)


Inputs = np.ndarray | SequenceInputs


def torch_args(x: Inputs) -> tuple[Tensor, ...]:
    """The module's arguments for a batch of inputs."""
    if isinstance(x, SequenceInputs):
        return torch.from_numpy(x.values), torch.from_numpy(x.lengths)
    return (torch.from_numpy(x),)


def export(module: Deployable, example: Inputs, fmt: str, path: Path) -> Path:
    args = torch_args(example)
    if fmt == "onnx":
        batch = torch.export.Dim("batch", min=1)
        if isinstance(example, SequenceInputs):  # any number of sequences of any length
            names, shapes = ["values", "lengths"], ({0: batch, 1: torch.export.Dim("time", min=1)}, {0: batch})
        else:
            names, shapes = ["input"], ({0: batch},)
        torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=True,
            external_data=False,  # one file
            input_names=names,
            output_names=[output_name(module.task)],
            dynamic_shapes=shapes,
        )
    else:
        torch.jit.save(torch.jit.trace(module, args), str(path))
    return path


def runner(path: Path, fmt: str) -> Callable[[Inputs], np.ndarray]:
    """A function that runs the exported file: raw inputs -> probabilities (or values)."""
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        return lambda x: session.run(None, dict(zip(names, (a.numpy() for a in torch_args(x)), strict=True)))[0]
    scripted = torch.jit.load(str(path))
    return lambda x: scripted(*torch_args(x)).detach().numpy()


def quantize(fmt: str, module: Deployable, example: Inputs, path: Path, out: Path) -> Path:
    if fmt == "onnx":  # onnxruntime quantises MatMul / Gemm and convolutions
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # The exporter records the example's shapes in value_info, which clashes with onnxruntime's own shape
        # inference of the dynamic batch: quantise a copy without them.
        graph = onnx.load(str(path))
        graph.graph.ClearField("value_info")
        plain = out.with_name(f".{path.stem}.no_value_info.onnx")
        onnx.save(graph, str(plain))
        try:
            quantize_dynamic(str(plain), str(out), weight_type=QuantType.QInt8)
        finally:
            plain.unlink(missing_ok=True)
        return out
    quantized = torch.ao.quantization.quantize_dynamic(module, {nn.Linear}, dtype=torch.qint8)  # linear layers
    torch.jit.save(torch.jit.trace(quantized, torch_args(example)), str(out))
    return out


def latency_ms(run: Callable[[Inputs], np.ndarray], x: Inputs, repeats: int = 30) -> float:
    run(x)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def test_score(
    run: Callable[[Inputs], np.ndarray], x: Inputs, y: np.ndarray, facts: dict[str, Any]
) -> dict[str, float]:
    """On the test split: accuracy for a classifier, exact match at the thresholds for a multi-label model, RMSE in
    the target's units for a regressor (facts: proj.models.deployable.model_facts)."""
    out, task = run(x), facts["task"]
    if task == "classification":
        return {"test_accuracy": round(float((out.argmax(1) == y).mean()), 4)}
    if task == "multilabel":
        decided = out >= np.asarray(facts["thresholds"])
        return {"test_exact_match": round(float((decided == (y >= 0.5)).all(1).mean()), 4)}
    if task == "regression":
        return {"test_rmse": round(float(np.sqrt(((out - y.reshape(out.shape)) ** 2).mean())), 4)}
    return {}


def measure(
    run: Callable[[Inputs], np.ndarray], path: Path | None, x: Inputs, y: np.ndarray, facts: dict[str, Any]
) -> dict[str, Any]:
    return {
        "size_kb": round(path.stat().st_size / 1024, 1) if path else None,
        "latency_ms_batch1": round(latency_ms(run, x[:1]), 3),
        "latency_ms_batch64": round(latency_ms(run, x[:64]), 3),
        **test_score(run, x, y, facts),
    }
