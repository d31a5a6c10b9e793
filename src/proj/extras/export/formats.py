"""The export formats: a Deployable (proj.models.deployable: raw inputs in, predictions out) written as ONNX or
TorchScript, optionally quantised to int8, and measured: size, CPU latency and the test score of each.

The exported model takes raw inputs as the data module stores them with any batch size; `python -m proj export`
(command.py) drives this.
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

from proj.models.deployable import Deployable, output_name

FORMATS = ("onnx", "torchscript")
TOLERANCE = 1e-4


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


def test_score(
    run: Callable[[np.ndarray], np.ndarray], x: np.ndarray, y: np.ndarray, facts: dict[str, Any]
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
    run: Callable[[np.ndarray], np.ndarray], path: Path | None, x: np.ndarray, y: np.ndarray, facts: dict[str, Any]
) -> dict[str, Any]:
    return {
        "size_kb": round(path.stat().st_size / 1024, 1) if path else None,
        "latency_ms_batch1": round(latency_ms(run, x[:1]), 3),
        "latency_ms_batch64": round(latency_ms(run, x[:64]), 3),
        **test_score(run, x, y, facts),
    }
