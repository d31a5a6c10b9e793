"""`python -m proj export`: a deployable model from a checkpoint, checked against PyTorch.

    python -m proj export --config logs/default/version_0/config.yaml \
        --ckpt_path logs/default/version_0/checkpoints/best-22.ckpt --format onnx [--quantize int8] [--out DIR]

The exported model takes raw inputs as the data module stores them (digits 0..16, images as uint8 0..255,
table rows after imputation) with any batch size, and returns class probabilities: scaling and
standardisation with the training statistics are baked in. Next to it, model.json gives the class names,
input shape and dtype, the normalisation, the source checkpoint and the parity measured here. Formats:
onnx (checked with onnxruntime) and torchscript. `--quantize int8` adds dynamic int8 quantisation (weights in
int8, activations quantised on the fly) and reports file size, CPU latency and test accuracy of both.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from proj.callbacks import class_names

FORMATS = ("onnx", "torchscript")
TOLERANCE = 1e-4


class Deployable(nn.Module):
    """Raw inputs in, class probabilities out: the data module's scaling and standardisation, then the net."""

    def __init__(self, net: nn.Module, scale: float, mean: list[float] | None, std: list[float] | None, ndim: int):
        super().__init__()
        self.net = net
        shape = (1, -1) + (1,) * (ndim - 2)
        self.scale = scale
        self.register_buffer("mean", torch.tensor(mean or [0.0]).view(shape))
        self.register_buffer("std", torch.tensor(std or [1.0]).view(shape))

    def forward(self, x: Tensor) -> Tensor:
        x = x.to(torch.float32) * self.scale
        return self.net((x - self.mean) / self.std).softmax(-1)


def parse(args: list[str]) -> tuple[dict[str, Any], list[str]]:
    from proj.cli import take_options

    options, rest = take_options(args, {"format": "onnx", "quantize": None, "out": None, "ckpt_path": None})
    if options["format"] not in FORMATS:
        raise ValueError(f"--format {options['format']!r} is not supported: choose {' or '.join(FORMATS)}")
    if options["quantize"] not in (None, "int8"):
        raise ValueError(f"--quantize {options['quantize']!r} is not supported: choose int8 (or leave it out)")
    if not options["ckpt_path"]:
        raise ValueError("--ckpt_path is required: the checkpoint to export (e.g. <run>/checkpoints/last.ckpt)")
    if not Path(options["ckpt_path"]).is_file():
        raise FileNotFoundError(f"--ckpt_path {options['ckpt_path']} does not exist")
    return options, rest


def load(config_args: list[str], ckpt_path: str) -> tuple[Any, Any]:
    """The model and data module of the config, with the checkpoint's weights and data statistics."""
    from proj.cli import main

    cli = main([*config_args, "--test_after_fit=false"], run=False)
    model, dm = cli.model, cli.datamodule
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as err:
        raise ValueError(
            f"--ckpt_path {ckpt_path} does not match the model of the config ({type(model.net).__name__}): "
            f"{str(err).splitlines()[0]} Export with the config.yaml of the run that wrote the checkpoint."
        ) from err
    dm.setup()
    saved = checkpoint.get(type(dm).__qualname__)
    if saved:
        dm.load_state_dict(saved)  # the normalisation the model was trained with
    return model.eval(), dm


def deployable(model: Any, dm: Any) -> Deployable:
    stats = dm.stats
    return Deployable(model.net, dm.scale, stats.get("mean"), stats.get("std"), len(dm.input_shape) + 1).eval()


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
            output_names=["probabilities"],
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


def accuracy(run: Callable[[np.ndarray], np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    return float((run(x).argmax(1) == y).mean())


def measure(run: Callable[[np.ndarray], np.ndarray], path: Path | None, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    return {
        "size_kb": round(path.stat().st_size / 1024, 1) if path else None,
        "latency_ms_batch1": round(latency_ms(run, x[:1]), 3),
        "latency_ms_batch64": round(latency_ms(run, x[:64]), 3),
        "test_accuracy": round(accuracy(run, x, y), 4),
    }


def command(name: str, args: list[str]) -> dict[str, Any]:
    options, config_args = parse(args)
    fmt, ckpt = options["format"], Path(options["ckpt_path"])
    model, dm = load(config_args, str(ckpt))
    module = deployable(model, dm)
    x_test, y_test = (t.numpy() for t in dm.splits["test"].tensors)
    example = torch.from_numpy(x_test[:64])
    run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    out = Path(options["out"] or run_dir / "export")
    out.mkdir(parents=True, exist_ok=True)
    path = export(module, example, fmt, out / ("model.onnx" if fmt == "onnx" else "model.pt"))

    # Parity: the exported file against PyTorch on a test batch, and on a batch of another size.
    run = runner(path, fmt)
    with torch.no_grad():
        reference = module(torch.from_numpy(x_test)).numpy()
    diff = max(
        float(np.abs(run(x_test[:64]) - reference[:64]).max()), float(np.abs(run(x_test[:7]) - reference[:7]).max())
    )
    if diff > TOLERANCE:
        raise RuntimeError(f"{path}: outputs differ from PyTorch by {diff:.2e} (> {TOLERANCE}); not exported")
    report: dict[str, Any] = {
        "pytorch fp32": measure(lambda a: module(torch.from_numpy(a)).detach().numpy(), None, x_test, y_test)
    }
    report[f"{fmt} fp32"] = measure(run, path, x_test, y_test)
    files = {"model": str(path.resolve())}
    if options["quantize"]:
        qpath = quantize(fmt, module, example, path, out / (f"model.int8.{path.suffix[1:]}"))
        report[f"{fmt} int8"] = measure(runner(qpath, fmt), qpath, x_test, y_test)
        files["model_int8"] = str(qpath.resolve())
    info = {
        "format": fmt,
        "files": files,
        "classes": class_names(dm),
        "input_shape": ["batch", *dm.input_shape],
        "input_dtype": str(dm.splits["test"].tensors[0].dtype).replace("torch.", ""),
        "output": "probabilities (batch, classes)",
        "scale": dm.scale,
        "mean": dm.stats.get("mean"),
        "std": dm.stats.get("std"),
        "source_checkpoint": str(ckpt),
        "max_abs_diff_vs_pytorch": diff,
        "measured": report,
    }
    (out / "model.json").write_text(json.dumps(info, indent=2))
    print(f"exported {path} (max |difference| from PyTorch {diff:.1e}); {out / 'model.json'}")
    print(f"{'model':<16}{'size KB':>10}{'ms batch 1':>12}{'ms batch 64':>13}{'test acc':>10}")
    for label, m in report.items():
        size = f"{m['size_kb']:.1f}" if m["size_kb"] else "-"
        print(
            f"{label:<16}{size:>10}{m['latency_ms_batch1']:>12.3f}{m['latency_ms_batch64']:>13.3f}{m['test_accuracy']:>10.4f}"
        )
    return info
