"""`python -m proj export`: a deployable model from a checkpoint, checked against PyTorch.

    python -m proj export --config logs/default/version_0/config.yaml \
        --ckpt_path logs/default/version_0/checkpoints/best-22.ckpt --format onnx [--quantize int8] [--out DIR]

It writes <run>/export/: the model (proj.deploy.export: raw inputs in, probabilities or values in the
target's units out), and model.json with the task, class or target names, input shape and dtype, the
normalisation, the source checkpoint and the parity measured here; its paths are relative to its own folder,
so a moved run directory keeps working. Formats: onnx (checked with onnxruntime) and torchscript.
`--quantize int8` adds dynamic int8 quantisation (weights in int8, activations quantised on the fly) and
reports file size, CPU latency and the test score of both.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from proj.callbacks.checkpointing import run_dir_of_checkpoint
from proj.callbacks.run_record import carry_run_record
from proj.cli.checkpoint_model import read_checkpoint
from proj.cli.lightning_cli import ToolCLI, run_tool
from proj.cli.parser import UsageError
from proj.deploy.export import TOLERANCE, deployable, export, measure, output_name, runner
from proj.deploy.export import quantize as quantize_int8
from proj.models import TargetsMismatch


def load(cli: ToolCLI, ckpt_path: str) -> tuple[Any, Any]:
    """The model and data module of the config, with the checkpoint's weights and data statistics."""
    model, dm = cli.model, cli.datamodule
    trusted = cli.config.get("weights_only") is False  # --weights_only false: the explicit opt-out
    checkpoint = read_checkpoint(ckpt_path, weights_only=not trusted)
    try:
        model.check_targets(checkpoint, ckpt_path)  # the data's classes must be those it was trained on
    except TargetsMismatch as err:
        raise UsageError(str(err)) from err
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as err:
        raise UsageError(
            f"--ckpt_path {ckpt_path} does not match the model of the config ({type(model.net).__name__}): "
            f"{str(err).splitlines()[0]} Export with the config.yaml of the run that wrote the checkpoint."
        ) from err
    dm.setup()
    saved = checkpoint.get(type(dm).__qualname__)
    if saved:
        dm.load_state_dict(saved)  # the normalisation the model was trained with
    return model.eval(), dm


def export_run(
    cli: ToolCLI,
    format: Literal["onnx", "torchscript"] = "onnx",
    quantize: Literal["int8"] | None = None,
    out: Path | None = None,
) -> dict[str, Any]:
    """Export the checkpoint given by --ckpt_path as a deployable model, checked against PyTorch.

    Args:
        format: onnx (checked with onnxruntime) or torchscript.
        quantize: int8 adds a dynamically quantised copy, measured beside the fp32 one.
        out: the folder to write into (default: <run>/export/).
    """
    ckpt_path = cli.config.get("ckpt_path")
    if not ckpt_path:
        raise UsageError("--ckpt_path is required: the checkpoint to export (e.g. <run>/checkpoints/last.ckpt)")
    if not Path(ckpt_path).is_file():
        raise UsageError(f"--ckpt_path {ckpt_path} does not exist")
    fmt, ckpt = format, Path(ckpt_path)
    model, dm = load(cli, str(ckpt))
    module = deployable(model, dm)
    x_test, y_test = (t.numpy() for t in dm.splits["test"].tensors)
    example = torch.from_numpy(x_test[:64])
    out = Path(out or (cli.run_dir or run_dir_of_checkpoint(ckpt)) / "export")
    out.mkdir(parents=True, exist_ok=True)
    path = export(module, example, fmt, out / ("model.onnx" if fmt == "onnx" else "model.pt"))

    # Parity: the exported file against PyTorch on a test batch, and on a batch of another size.
    run = runner(path, fmt)
    with torch.no_grad():
        reference = module(torch.from_numpy(x_test)).numpy()
    diff = max(
        float(np.abs(run(x_test[:64]) - reference[:64]).max()), float(np.abs(run(x_test[:7]) - reference[:7]).max())
    )
    # Relative to the outputs' size: a regressor's values are in the target's units (prices in the thousands).
    tolerance = TOLERANCE * max(1.0, float(np.abs(reference).max()))
    if diff > tolerance:
        raise RuntimeError(f"{path}: outputs differ from PyTorch by {diff:.2e} (> {tolerance:.1e}); not exported")
    report: dict[str, Any] = {
        "pytorch fp32": measure(
            lambda a: module(torch.from_numpy(a)).detach().numpy(), None, x_test, y_test, model.task
        )
    }
    report[f"{fmt} fp32"] = measure(run, path, x_test, y_test, model.task)
    # Paths relative to model.json's folder: a moved or copied run (or export folder) still finds its files.
    files = {"model": path.name}
    if quantize:
        qpath = quantize_int8(fmt, module, example, path, out / (f"model.int8.{path.suffix[1:]}"))
        report[f"{fmt} int8"] = measure(runner(qpath, fmt), qpath, x_test, y_test, model.task)
        files["model_int8"] = qpath.name
    info = {
        "format": fmt,
        "files": files,
        "task": model.task,
        "classes": list(getattr(model, "class_names", [])),
        "target_names": list(getattr(model, "target_names", [])),
        "features": list(getattr(dm, "features", None) or []),  # a table's training columns, in input order
        "input_shape": ["batch", *dm.input_shape],
        "input_dtype": str(dm.splits["test"].tensors[0].dtype).replace("torch.", ""),
        "output": f"{output_name(model.task)} (batch, {model.num_outputs})",
        "scale": dm.scale,
        "mean": dm.stats.get("mean"),
        "std": dm.stats.get("std"),
        "source_checkpoint": os.path.relpath(os.path.abspath(ckpt), os.path.abspath(out)),
        "max_abs_diff_vs_pytorch": diff,
        "measured": report,
    }
    (out / "model.json").write_text(json.dumps(info, indent=2))
    carry_run_record(cli.run_dir or run_dir_of_checkpoint(ckpt), out)  # run.json and model_card.md beside it
    print(f"exported {path} (max |difference| from PyTorch {diff:.1e}); {out / 'model.json'}")
    score = next((k for k in report["pytorch fp32"] if k.startswith("test_")), None)  # accuracy or rmse
    print(f"{'model':<16}{'size KB':>10}{'ms batch 1':>12}{'ms batch 64':>13}{(score or '').replace('_', ' '):>15}")
    for label, m in report.items():
        size = f"{m['size_kb']:.1f}" if m["size_kb"] else "-"
        value = f"{m[score]:.4f}" if score else ""
        print(f"{label:<16}{size:>10}{m['latency_ms_batch1']:>12.3f}{m['latency_ms_batch64']:>13.3f}{value:>15}")
    return info


def command(name: str, args: list[str]) -> dict[str, Any]:
    return run_tool(name, export_run, [*args, "--test_after_fit=false"])
