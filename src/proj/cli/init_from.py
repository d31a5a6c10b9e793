"""`fit --init_from CKPT`: a new run that starts from another run's weights (warm start, fine-tuning).

`--ckpt_path` and `--resume` continue a run: its optimizer, schedule, epoch and hyper-parameters. `--init_from`
reads only the checkpoint's net weights into the model this config built: the optimizer, the schedule, the
hyper-parameters (class weights included) and the run directory are this config's, and Lightning never sees the
checkpoint (its check that the classes are the checkpoint's does not apply: other classes are the point here).

Each weight of the net whose name and shape are the checkpoint's is loaded; the others keep their fresh
initialisation: the output layer when the checkpoint was trained on other classes (another count, or the same
count of other names), any other weight of another shape, and what the checkpoint lacks. The report (loaded,
re-initialised and why, missing, skipped) is printed once and written into the run directory as init_from.json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import yaml
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from proj.cli.checkpoints import check_data_fits, read_checkpoint
from proj.cli.parser import UsageError

REPORT = "init_from.json"
HELP = (
    "A checkpoint (<run>/checkpoints/*.ckpt) whose net weights start this new run: its optimizer, schedule, "
    "hyper-parameters and run directory are this config's. Weights of another shape (the head of other classes) "
    "are re-initialised; the report is <run>/init_from.json. --ckpt_path / --resume continue a run instead."
)


def init_from_refusal(config: Any, fitting: bool) -> str | None:
    """Why `init_from` cannot be used as written (a missing file, or with a checkpoint that continues a run), or
    None. Outside fit a --ckpt_path wins: a fine-tuned run's config.yaml names its init_from, its checkpoints
    hold the fine-tuned weights."""
    path, ckpt = config.get("init_from"), config.get("ckpt_path")
    if not path:
        return None
    if ckpt and fitting and not resumes_its_own_run(config, path):
        given = f"--resume {config.resume}" if config.get("resume") else f"--ckpt_path {ckpt}"
        return (
            f"--init_from {path} with {given}: --init_from starts a new run from the weights (a new optimizer, "
            f"schedule and run directory), {given.split()[0]} continues a run; give one of them "
            "(--init_from null drops it)"
        )
    if ckpt:
        return None
    if Path(path).is_dir():
        found = sorted(Path(path).glob("**/*.ckpt"))
        example = found[0] if found else Path(path) / "checkpoints" / "best-<epoch>.ckpt"
        return f"--init_from {path} is a directory: give one of its checkpoint files, e.g. --init_from {example}"
    if not Path(path).is_file():
        return f"--init_from {path} does not exist: give a checkpoint file (<run>/checkpoints/*.ckpt)"
    return None


def resumes_its_own_run(config: Any, path: str) -> bool:
    """`--resume RUN` of a run that was itself started with --init_from: its config.yaml names the same file,
    and its last.ckpt holds the weights to continue from."""
    run = config.get("resume")
    saved = Path(str(run)) / "config.yaml" if run else None
    if saved is None or not saved.is_file():
        return False
    return (yaml.safe_load(saved.read_text()) or {}).get("init_from") == path


def load_init_from(model: nn.Module, path: str, weights_only: bool = True) -> dict[str, Any]:
    """Load the net weights of checkpoint `path` that fit `model` (by name and shape) and return the report.
    Refused (UsageError) when not one layer weight of the net fits: that checkpoint is of another net."""
    checkpoint = read_checkpoint(path, weights_only, option="--init_from")
    saved = {k: v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
    own = {k: v for k, v in model.state_dict().items() if k.startswith("net.")}
    theirs, mine = class_names((checkpoint.get("hyper_parameters") or {}).get("targets")), class_names(model)
    outputs = output_layer_keys(model) if theirs and mine and theirs != mine else set()
    lazy = nn.parameter.UninitializedParameter  # takes the checkpoint's shape when loaded
    loaded, reinitialised = [], {}
    for key, value in saved.items():
        if key not in own:
            continue
        if key in outputs:
            reinitialised[key] = f"trained on other classes ({len(theirs)}: {short(theirs)}; here {short(mine)})"
        elif not isinstance(own[key], lazy) and tuple(value.shape) != tuple(own[key].shape):
            reinitialised[key] = f"{list(value.shape)} in the checkpoint, {list(own[key].shape)} here"
        else:
            loaded.append(key)
    # A bias or a BatchNorm vector that happens to fit carries no features: a layer's matrix or kernel must.
    kernels = {name for name, p in model.named_parameters() if isinstance(p, lazy) or p.ndim >= 2}
    if not kernels & set(loaded):
        raise UsageError(
            f"--init_from {path}: not one layer weight of its net fits this model's net (checkpoint: "
            f"{short(list(saved)) or 'no net.* weights'}; this model: {short(list(own))}): give a checkpoint of "
            "the same net (model.init_args.net)"
        )
    model.load_state_dict({k: saved[k] for k in loaded}, strict=False)
    report = {
        "init_from": str(path),
        "loaded": loaded,
        "reinitialised": reinitialised,
        "missing": [k for k in own if k not in saved],  # this net's, not in the checkpoint: initialised afresh
        "skipped": [k for k in saved if k not in own],  # the checkpoint's, not in this net
    }
    rank_zero_info(summary(report, len(own)))
    return report


def class_names(source: Any) -> list[str] | None:
    """The class (or target) names of a model, or of a checkpoint's `targets` hyper-parameter."""
    targets = getattr(source, "targets", source) or {}
    names = targets.get("classes") or targets.get("names")
    return [str(n) for n in names] if names else None


def output_layer_keys(model: nn.Module) -> set[str]:
    """The weights of the net's output layer: the last module with parameters of its own (the template's nets
    register their head last), if it gives the model's `num_outputs` outputs."""
    last: tuple[str, nn.Module] | None = None
    for name, module in model.named_modules():
        if name.startswith("net") and next(module.parameters(recurse=False), None) is not None:
            last = (name, module)
    if last is None:
        return set()
    name, module = last
    params = dict(module.named_parameters(recurse=False))
    first = next(iter(params.values()))
    if first.ndim == 0 or first.shape[0] != getattr(model, "num_outputs", None):
        return set()
    return {f"{name}.{n}" for n in params}


def short(keys: list[str], n: int = 4) -> str:
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def summary(report: dict[str, Any], total: int) -> str:
    """The report on one line: what a user checks first is that the body was loaded and the head was not."""
    again = [f"{k} ({why})" for k, why in report["reinitialised"].items()]
    return (
        f"--init_from {report['init_from']}: loaded {len(report['loaded'])} of the {total} tensors of the net; "
        f"re-initialised: {short(again) or 'none'}; not in the checkpoint: {short(report['missing']) or 'none'}; "
        f"only in the checkpoint (skipped): {short(report['skipped']) or 'none'}. The optimizer, schedule and "
        f"hyper-parameters are this config's."
    )


class InitFromReport(Callback):
    """Writes the report into the run directory once the first step is done: a run that fails before it leaves
    no run directory behind (proj.cli.run_dir), and without a logger there is no run directory to write into."""

    def __init__(self, report: dict[str, Any]) -> None:
        self.report, self.written = report, False

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self.written or trainer.logger is None:
            return
        self.written = True
        log_dir = trainer.log_dir  # on every rank: under DDP the Trainer broadcasts it from rank 0
        if trainer.is_global_zero and log_dir is not None:
            path = Path(log_dir) / REPORT
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(self.report, indent=1) + "\n")


def apply_init_from(cli: Any, config: Any, fitting: bool) -> None:
    """After the classes are built: load `init_from` into the model (unless a --ckpt_path gives the weights) and
    add the callback that writes its report."""
    path = config.get("init_from") if config is not None else None
    if not path or config.get("ckpt_path"):
        return
    check_data_fits(cli.datamodule, path, "--init_from", config.get("weights_only") is not False)
    report = load_init_from(cli.model, path, config.get("weights_only") is not False)
    if fitting:
        cli.trainer.callbacks.append(InitFromReport(report))
