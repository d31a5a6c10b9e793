"""The facts a run record holds: the code (git), the packages, the device, and the model card's facts (task,
data, splits, classes or targets, final metrics and their intervals, the recipe in one paragraph).

Each is read once per command (the git call is one subprocess), never per epoch. The recipe is written from
the same flat keys the HPARAMS tab shows (proj.run_settings), so the card and the loggers agree.
"""

from __future__ import annotations

import json
import math
import platform
import subprocess
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch

from proj.run_settings import PLUMBING, optim_params, plain, readable_hparams, trainer_params

# Always recorded; the others only when this process imported them (they were used): import name -> distribution.
CORE_PACKAGES = ("torch", "lightning", "torchmetrics", "numpy", "jsonargparse")
USED_PACKAGES = {
    "sklearn": "scikit-learn", "kornia": "kornia", "tensorboard": "tensorboard", "mlflow": "mlflow",
    "wandb": "wandb", "optuna": "optuna", "ray": "ray", "onnx": "onnx", "onnxruntime": "onnxruntime",
    "schedulefree": "schedulefree", "pytorch_optimizer": "pytorch-optimizer", "ctgan": "ctgan",
}  # fmt: skip
SPLIT_PREFIXES = ("val", "test")  # the final metrics: what validation and test logged last
SPLIT_WORDS = ("fraction", "seed", "fold", "path", "root", "dir", "file")  # data settings of the splits, not recipe
# Where the diagnose extra's Evaluation writes a test's intervals and figures: the test after fit, a later `test` of a
# run's checkpoint. Read as files, never imported: the extras are independent of each other (`make lint`).
EVALUATIONS = ("evaluation/test.json", "test/evaluation/test.json")
DIAGNOSIS = "diagnose/report.md"  # the diagnose extra's report, linked from the card when it exists


def git_state(cwd: Path | None = None) -> dict[str, Any] | None:
    """The commit of the working directory's repository (the project the user copied) and whether tracked files
    differ from it; None outside a repository or without git. One subprocess: `status --porcelain=v2 --branch`
    prints the commit and the changes at once. Untracked files (logs/, new notes) do not make it dirty."""
    command = ["git", "--no-optional-locks", "status", "--porcelain=v2", "--branch", "--untracked-files=no"]
    try:
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    lines = done.stdout.splitlines()
    heads = dict(line[2:].split(" ", 1) for line in lines if line.startswith("# ") and " " in line[2:])
    commit = heads.get("branch.oid")
    return {
        "commit": None if commit in (None, "(initial)") else commit,
        "branch": None if heads.get("branch.head") in (None, "(detached)") else heads["branch.head"],
        "dirty": any(not line.startswith("#") for line in lines),
    }


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    names = [*CORE_PACKAGES, *(dist for module, dist in USED_PACKAGES.items() if module in sys.modules)]
    names.append(__name__.split(".")[0])  # the project itself (renamed by `proj new`)
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def device_facts(trainer: L.Trainer) -> dict[str, Any]:
    kind = trainer.strategy.root_device.type
    return {
        "accelerator": kind,
        "strategy": type(trainer.strategy).__name__,
        "devices": trainer.num_devices,
        "num_nodes": trainer.num_nodes,
        "world_size": trainer.world_size,
        "precision": trainer.precision,
        "device_names": device_names(kind, trainer.device_ids),
    }


def device_names(kind: str, ids: list[int]) -> list[str]:
    if kind == "cuda":
        return [torch.cuda.get_device_name(i) for i in ids]
    if kind != "cpu":
        return [kind]
    try:  # the CPU's model name: platform.processor() is empty on most Linux machines
        text = Path("/proc/cpuinfo").read_text()
        name = next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        name = platform.processor() or platform.machine()
    return [name]


def final_metrics(trainer: L.Trainer) -> dict[str, float]:
    """The validation and test values the run logged last (epoch values: callback_metrics)."""
    values = {}
    for name, value in trainer.callback_metrics.items():
        split = name.split("/", 1)[0].split("_", 1)[0]
        if split in SPLIT_PREFIXES and (not torch.is_tensor(value) or value.numel() == 1):
            values[name] = float(value)
    return dict(sorted(values.items()))


def card_facts(trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
    """What the model card says of the training: task, model, data and its splits, classes or targets, recipe."""
    dm = trainer.datamodule
    params = readable_hparams(pl_module, dm, trainer)
    data_keys = [k for k in getattr(dm, "hparams", {}) if not k.startswith("_") and k not in PLUMBING]
    facts: dict[str, Any] = {
        "task": getattr(pl_module, "task", "custom"),
        "model": params.get("model"),
        "net": params.get("net"),
        "data": {"class": params.get("data"), **{k: params[k] for k in data_keys if k in params}},
        "splits": {name: len(split) for name, split in (getattr(dm, "splits", None) or {}).items()},
    }
    for name in ("class_names", "target_names"):
        names = getattr(pl_module, name, None)
        if names:
            facts["classes" if name == "class_names" else "target_names"] = [str(n) for n in names]
    if trainer.state.fn == "fit":
        facts["trained"] = {"epochs": trainer.current_epoch, "optimizer_steps": trainer.global_step}
    facts["recipe"] = recipe(params, pl_module, data_keys, trainer)
    return facts


def thresholds_fact(pl_module: L.LightningModule) -> dict[str, list[float]]:
    """A multi-label model's threshold per label, as the command that ran last used them (the test after fit: the
    best checkpoint's, which predict, export and serve use too)."""
    thresholds = getattr(pl_module, "decision_thresholds", None)
    return {"thresholds": [round(float(v), 4) for v in thresholds]} if thresholds is not None else {}


def recipe(params: Mapping[str, Any], pl_module: L.LightningModule, data_keys: list[str], trainer: L.Trainer) -> str:
    """The optimisation recipe as one paragraph, from the HPARAMS tab's keys."""
    hp = pl_module.hparams
    optim = [k for k in optim_params(hp.get("optim")) if k in params]
    train = [k for k in trainer_params(trainer) if k in params]
    data = [k for k in (*data_keys, "augmentation") if k in params]
    net = [k for k in params if k.startswith("net.")]
    model = [k for k in params if k not in {*optim, *train, *data, *net, "model", "net", "data"}]
    sentences = [f"{params.get('model')} on {params.get('net') or 'its net'}{listed(params, net, 'net.')}"]
    if model:
        sentences[0] += f"; {pairs(params, model)}"
    sentences.append(stages_sentence(params, optim))
    feeding = [k for k in data if not any(word in k for word in SPLIT_WORDS)]  # the splits: the card's Data
    sentences.append(f"Data: {pairs(params, feeding) or 'as configured'}")
    sentences.append(trainer_sentence(params, train))
    if trainer.state.fn == "fit":
        sentences.append(f"Ran {trainer.current_epoch} epoch(s), {trainer.global_step} optimizer steps")
    return ". ".join(s for s in sentences if s) + "."


def trainer_sentence(params: Mapping[str, Any], keys: list[str]) -> str:
    get = {k: params[k] for k in keys}
    text = [f"up to {get.pop('max_epochs', '?')} epochs", f"precision {get.pop('precision', '32-true')}"]
    clip, algorithm = get.pop("gradient_clip_val", 0.0), get.pop("gradient_clip_algorithm", "norm")
    if clip:
        text.append(f"gradients clipped at {clip} ({algorithm})")
    if get.get("accumulate_grad_batches") == 1:
        get.pop("accumulate_grad_batches")
    text.append(f"{get.pop('world_size', 1)} process(es)")
    return "Trainer: " + ", ".join(t for t in [*text, pairs(get, list(get))] if t)


def stages_sentence(params: Mapping[str, Any], keys: list[str]) -> str:
    """`AdamW (lr 0.003, weight_decay 0.05) with CosineAnnealingLR (...) per step, 50 warm-up steps`, a stage each."""
    prefixes = sorted({k.split(".", 1)[0] + "." for k in keys if k.startswith("stage") and "." in k})
    parts = []
    for prefix in ["", *prefixes]:
        own = [k for k in keys if (k.startswith(prefix) if prefix else not k.startswith("stage"))]
        get = {k[len(prefix) :]: params[k] for k in own}
        if "optimizer" not in get:
            continue
        opt = [prefix + k for k in get if k in ("lr", "weight_decay") or k.startswith("optimizer.")]
        text = f"{get['optimizer']}{listed(params, opt, prefix + 'optimizer.', prefix)}"
        if get.get("schedule", "none") != "none":
            sched = [prefix + k for k in get if k.startswith("schedule.")]
            text += f" with {get['schedule']}{listed(params, sched, prefix + 'schedule.')}"
            text += f" per {get['interval']}" if "interval" in get else ""
        if get.get("warmup_steps"):
            text += f", {get['warmup_steps']} warm-up steps"
        if prefix:
            text = f"from epoch {get.get('start_epoch')} {text}"
        parts.append(text)
    tail = ["no weight decay on 1-D parameters (biases, norms)" if params.get("no_decay_1d") else ""]
    tail.append(f"L1 penalty {params['l1']}" if params.get("l1") else "")
    scale = params.get("scale_lr", "none")
    tail.append(f"lr scaled ({scale}) with the world size" if scale not in (None, "none") else "")
    tail.append(f"parameter groups {params['groups']}" if params.get("groups") else "")
    tail_text = ", ".join(t for t in tail if t)
    return "Optimisation: " + ", then ".join(parts) + (f"; {tail_text}" if tail_text else "")


def listed(params: Mapping[str, Any], keys: list[str], *strip: str) -> str:
    """` (k v, k v)`, or nothing when there are no keys."""
    text = pairs(params, keys, *strip)
    return f" ({text})" if text else ""


def pairs(params: Mapping[str, Any], keys: list[str], *strip: str) -> str:
    """`k v, k v` of the keys, with the given prefixes taken off their names."""
    items = []
    for key in keys:
        name = key
        for prefix in strip:
            name = name[len(prefix) :] if prefix and name.startswith(prefix) else name
        items.append(f"{name} {plain(params[key])}")
    return ", ".join(items)


def evaluation_facts(run_dir: Path, metrics: Mapping[str, float]) -> dict[str, Any]:
    """What the card says of the evaluation, read from the run directory when the card is written: the 95% interval
    of each test metric ("intervals", from the newest test.json), the evaluation's files ("evaluation": its JSON and
    figures, relative to the run) and the diagnose report ("diagnosis"). An interval is shown only beside the value
    it was computed for: a test.json of another test (older, or of another process's share under DDP) is left out."""
    facts: dict[str, Any] = {}
    found = [run_dir / name for name in EVALUATIONS if (run_dir / name).is_file()]
    saved = read_json(max(found, key=lambda path: path.stat().st_mtime)) if found else None
    if saved is not None:
        path, report = saved
        folder = path.parent.relative_to(run_dir).as_posix()
        level = (report.get("bootstrap") or {}).get("level", 0.95)
        facts["intervals"] = {
            m["logged"]: {"low": m["low"], "high": m["high"], "level": level}
            for m in (report.get("metrics") or {}).values()
            if isinstance(m, dict) and same_value(m.get("value"), metrics.get(m.get("logged")), m)
        }
        figures = report.get("figures") or {}
        facts["evaluation"] = {"file": path.relative_to(run_dir).as_posix(), "figures": {
            name: f"{folder}/{file}" for name, file in figures.items() if (path.parent / str(file)).is_file()
        }}  # fmt: skip
    if (run_dir / DIAGNOSIS).is_file():
        facts["diagnosis"] = DIAGNOSIS
    return facts


def read_json(path: Path) -> tuple[Path, dict[str, Any]] | None:
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):  # half-written or hand-edited: no intervals rather than no card
        return None
    return (path, report) if isinstance(report, dict) else None


def same_value(saved: Any, logged: float | None, metric: dict[str, Any]) -> bool:
    """The interval's metric value is the one logged (float32 against float64: within 1e-4), and it has both ends."""
    numbers = (saved, logged, metric.get("low"), metric.get("high"))
    if not all(isinstance(v, int | float) and math.isfinite(v) for v in numbers):
        return False
    return math.isclose(saved, logged, rel_tol=1e-4, abs_tol=1e-6)
