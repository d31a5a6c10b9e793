"""`python -m proj export`: a deployable model from a checkpoint, checked against PyTorch.

    python -m proj export --config logs/default/version_0/config.yaml \
        --ckpt_path logs/default/version_0/checkpoints/best-22.ckpt --format onnx [--quantize int8] [--out DIR]

It writes <run>/export/: the model (proj.extras.export.formats: raw inputs in, probabilities or values in the
target's units out), and model.json with the task, class or target names, input shape and dtype, the
normalisation, the source checkpoint and the parity measured here; its paths are relative to its own folder,
so a moved run directory keeps working. Formats: onnx (checked with onnxruntime) and torchscript.
`--quantize int8` adds dynamic int8 quantisation (weights in int8, activations quantised on the fly) and
reports file size, CPU latency and the test score of both.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import TensorDataset

from proj.callbacks.checkpointing import run_dir_of_checkpoint
from proj.cli.checkpoints import load_trained
from proj.cli.config_commands import ConfigCommandCLI, run_config_command
from proj.cli.parser import UsageError
from proj.data.loaders import split_tensors
from proj.extras.export.formats import TOLERANCE, SequenceInputs, export, measure, runner, torch_args
from proj.extras.export.formats import quantize as quantize_int8
from proj.models.deployable import deployable, input_facts, model_facts, output_name

MEASURED = 2000  # test images an export is checked and measured on, when the test split is read from files

# A run's records, copied beside the model when the run has them (the run_record extra writes them).
RECORDS = ("run.json", "model_card.md")


def export_run(
    cli: ConfigCommandCLI,
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
    model, dm = load_trained(cli, str(ckpt))
    if getattr(dm, "predicting_only", None):  # the training data is gone: no test split to check the export on
        raise UsageError(f"{dm.predicting_only}: export checks the exported model on the test split of that data")
    module = deployable(model, dm)
    # The parity check and the accuracy of each format: the test split, or its first images when they are read
    # from files (a folder of any size: the images are decoded into memory here).
    test = dm.splits["test"]
    x, y = split_tensors(test, None if isinstance(test, TensorDataset) else MEASURED)
    x_test, y_test = as_inputs(x), y.numpy()
    example = x_test[:64]
    out = Path(out or (cli.run_dir or run_dir_of_checkpoint(ckpt)) / "export")
    out.mkdir(parents=True, exist_ok=True)
    path = export(module, example, fmt, out / ("model.onnx" if fmt == "onnx" else "model.pt"))

    # Parity: the exported file against PyTorch on a test batch, and on a batch of another size.
    run = runner(path, fmt)
    with torch.no_grad():
        reference = module(*torch_args(x_test)).numpy()
    diff = max(
        float(np.abs(run(x_test[:64]) - reference[:64]).max()), float(np.abs(run(x_test[:7]) - reference[:7]).max())
    )
    # Relative to the outputs' size: a regressor's values are in the target's units (prices in the thousands).
    tolerance = TOLERANCE * max(1.0, float(np.abs(reference).max()))
    if diff > tolerance:
        raise RuntimeError(f"{path}: outputs differ from PyTorch by {diff:.2e} (> {tolerance:.1e}); not exported")
    facts = model_facts(model)
    report: dict[str, Any] = {
        "pytorch fp32": measure(lambda a: module(*torch_args(a)).detach().numpy(), None, x_test, y_test, facts)
    }
    report[f"{fmt} fp32"] = measure(run, path, x_test, y_test, facts)
    # Paths relative to model.json's folder: a moved or copied run (or export folder) still finds its files.
    files = {"model": path.name}
    if quantize:
        qpath = quantize_int8(fmt, module, example, path, out / (f"model.int8.{path.suffix[1:]}"))
        report[f"{fmt} int8"] = measure(runner(qpath, fmt), qpath, x_test, y_test, facts)
        files["model_int8"] = qpath.name
    if "tokenizer" in dm.stats:  # texts: tokenized in Python with the run's tokenizer, kept beside the model
        (out / "tokenizer.json").write_text(dm.stats["tokenizer"])
        files["tokenizer"] = "tokenizer.json"
    info = {
        "format": fmt,
        "files": files,
        **facts,
        "features": list(getattr(dm, "features", None) or []),  # a table's training columns, in input order
        **input_facts(dm.stats["input"], dm.input_shape),
        "output": f"{output_name(model.task)} (batch, {model.num_outputs})",
        "scale": dm.scale,
        "mean": dm.stats.get("mean"),
        "std": dm.stats.get("std"),
        "source_checkpoint": os.path.relpath(os.path.abspath(ckpt), os.path.abspath(out)),
        "max_abs_diff_vs_pytorch": diff,
        "measured": report,
    }
    (out / "model.json").write_text(json.dumps(info, indent=2))
    copy_records(cli.run_dir or run_dir_of_checkpoint(ckpt), out)  # the model travels with its card
    print(f"exported {path} (max |difference| from PyTorch {diff:.1e}); {out / 'model.json'}")
    score = next((k for k in report["pytorch fp32"] if k.startswith("test_")), None)  # accuracy or rmse
    print(f"{'model':<16}{'size KB':>10}{'ms batch 1':>12}{'ms batch 64':>13}{(score or '').replace('_', ' '):>15}")
    for label, m in report.items():
        size = f"{m['size_kb']:.1f}" if m["size_kb"] else "-"
        value = f"{m[score]:.4f}" if score else ""
        print(f"{label:<16}{size:>10}{m['latency_ms_batch1']:>12.3f}{m['latency_ms_batch64']:>13.3f}{value:>15}")
    return info


def as_inputs(x: Any) -> np.ndarray | SequenceInputs:
    """A split's samples as the exported model takes them: an array, or padded sequences with their lengths."""
    if isinstance(x, tuple):  # proj.data.sequences.Padded
        return SequenceInputs(x.values.numpy(), x.lengths.numpy())
    return x.numpy()


def copy_records(run_dir: Path, out: Path) -> None:
    for name in RECORDS:
        source = run_dir / name
        if source.is_file() and source.resolve() != (out / name).resolve():
            shutil.copyfile(source, out / name)


def command(name: str, args: list[str]) -> dict[str, Any]:
    return run_config_command(name, export_run, [*args, "--test_after_fit=false"])
