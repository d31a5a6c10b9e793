"""Deployable models: raw inputs in, predictions out, written as ONNX or TorchScript, optionally int8.

The exported model takes raw inputs as the data module stores them (digits 0..16, images as uint8 0..255,
table rows after imputation) with any batch size. Scaling and standardisation with the training statistics
are baked in, and so is the task's output: class probabilities for a classifier, values in the target's units
for a regressor (its target standardisation undone). `python -m proj export` (proj.cli.export) drives this.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

FORMATS = ("onnx", "torchscript")
TOLERANCE = 1e-4


class Deployable(nn.Module):
    """Raw inputs in, the task's predictions out: the data module's scaling and standardisation, the net, then
    softmax (classification), the target's units (regression) or nothing (other tasks)."""

    def __init__(
        self,
        net: nn.Module,
        scale: float,
        mean: list[float] | None,
        std: list[float] | None,
        ndim: int,
        task: str = "classification",
        target_mean: Tensor | None = None,
        target_std: Tensor | None = None,
    ):
        super().__init__()
        self.net, self.scale, self.task = net, scale, task
        shape = (1, -1) + (1,) * (ndim - 2)
        self.register_buffer("mean", torch.tensor(mean or [0.0]).view(shape))
        self.register_buffer("std", torch.tensor(std or [1.0]).view(shape))
        self.register_buffer("target_mean", torch.zeros(1) if target_mean is None else target_mean.detach().clone())
        self.register_buffer("target_std", torch.ones(1) if target_std is None else target_std.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        x = x.to(torch.float32) * self.scale
        out = self.net((x - self.mean) / self.std)
        if self.task == "classification":
            return out.softmax(-1)
        if self.task == "regression":
            return out * self.target_std + self.target_mean
        return out


def deployable(model: Any, dm: Any) -> Deployable:
    """The model's net wrapped with the data module's preprocessing and the task's output."""
    stats = dm.stats
    return Deployable(
        model.net,
        dm.scale,
        stats.get("mean"),
        stats.get("std"),
        len(dm.input_shape) + 1,
        task=model.task,
        target_mean=getattr(model, "target_mean", None),
        target_std=getattr(model, "target_std", None),
    ).eval()


def output_name(task: str) -> str:
    return {"classification": "probabilities", "regression": "values"}.get(task, "outputs")


def export(module: Deployable, example: Tensor, fmt: str, path: Path) -> Path:
    if fmt == "onnx":
        batch = torch.export.Dim("batch", min=1)
        torch.onnx.export(
            module,
            (example,),
            str(path),
            dynamo=True,
            external_data=False,  # one file
            input_names=["input"],
            output_names=[output_name(module.task)],
            dynamic_shapes=({0: batch},),
        )
    else:
        torch.jit.save(torch.jit.trace(module, example), str(path))
    return path


def runner(path: Path, fmt: str) -> Callable[[np.ndarray], np.ndarray]:
    """A function that runs the exported file: raw input array -> probabilities."""
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x})[0]
    scripted = torch.jit.load(str(path))
    return lambda x: scripted(torch.from_numpy(x)).detach().numpy()


def quantize(fmt: str, module: Deployable, example: Tensor, path: Path, out: Path) -> Path:
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
    torch.jit.save(torch.jit.trace(quantized, example), str(out))
    return out


def latency_ms(run: Callable[[np.ndarray], np.ndarray], x: np.ndarray, repeats: int = 30) -> float:
    run(x)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def test_score(run: Callable[[np.ndarray], np.ndarray], x: np.ndarray, y: np.ndarray, task: str) -> dict[str, float]:
    """Accuracy for a classifier, RMSE in the target's units for a regressor, on the test split."""
    out = run(x)
    if task == "classification":
        return {"test_accuracy": round(float((out.argmax(1) == y).mean()), 4)}
    if task == "regression":
        return {"test_rmse": round(float(np.sqrt(((out - y.reshape(out.shape)) ** 2).mean())), 4)}
    return {}


def measure(
    run: Callable[[np.ndarray], np.ndarray], path: Path | None, x: np.ndarray, y: np.ndarray, task: str
) -> dict[str, Any]:
    return {
        "size_kb": round(path.stat().st_size / 1024, 1) if path else None,
        "latency_ms_batch1": round(latency_ms(run, x[:1]), 3),
        "latency_ms_batch64": round(latency_ms(run, x[:64]), 3),
        **test_score(run, x, y, task),
    }
