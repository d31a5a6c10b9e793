"""A checkpoint against the config it is used with: read it or say plainly why not, let the config's model values
win over the checkpoint's hyper-parameters, refuse a change that its weights cannot take, and load a trained model
for the commands that deploy it.

Lightning's CLI reads a checkpoint's hyper-parameters into `model` over what the user gave (LightningCLI.
_parse_ckpt_path), so `fit --resume RUN --model.init_args.label_smoothing 0.3` silently trained with the old
value. Here (`model_from_checkpoint`) the user's model config is kept, each value that differs from the
checkpoint's is named on one info line, and a change of shape (a different net width) is refused naming the key
instead of a state_dict error.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info

from proj.cli.parser import UsageError
from proj.models import TargetsMismatch
from proj.optim import import_class

# Errors torch.load raises for a file that is not a complete checkpoint: a truncated zip archive (RuntimeError),
# an empty file (EOFError), a text file (KeyError / UnpicklingError: "invalid load key").
UNREADABLE = (RuntimeError, EOFError, KeyError, ValueError, OSError, pickle.UnpicklingError)


def refused_checkpoint(err: Exception, path: str | None = None) -> str:
    found = re.search(r"GLOBAL (\S+)", str(err))
    what = f"a pickled reference to {found.group(1)}" if found else "pickled objects"
    return (
        f"Refused to load a checkpoint {path or '(--ckpt_path)'}: it holds {what}, beyond tensors and plain "
        "values, and unpickling it could run arbitrary code. If you trust the file, pass --weights_only false."
    )


def unreadable_checkpoint(path: Any, err: BaseException, option: str = "--ckpt_path") -> str:
    """Why `path` cannot be read as a checkpoint, and the fix: another checkpoint of the same run, if there is one.
    (A file that torch's weights-only unpickler refuses, naming the GLOBAL it found, is `refused_checkpoint`.)
    `option` is the command-line option that named the file (--ckpt_path, --init_from)."""
    reason = " ".join(str(err).split())[:120] or type(err).__name__
    message = f"{option} {path} is not a readable checkpoint (truncated, or not a checkpoint file: {reason})"
    others = sorted(p.name for p in Path(str(path)).parent.glob("*.ckpt") if p.name != Path(str(path)).name)
    if others:
        folder = Path(str(path)).parent
        found = ", ".join(others)
        verb = "continue from it" if option == "--ckpt_path" else "start from it"
        return f"{message}; {found} exists in {folder}: {verb} with {option} {folder / others[-1]}"
    return f"{message}; give a .ckpt file written by fit"


def read_checkpoint(path: str, weights_only: bool = True, option: str = "--ckpt_path") -> dict[str, Any]:
    """A Lightning checkpoint (memory-mapped: no weights are copied), or a UsageError naming the file and the
    `option` that named it (a refusal to unpickle an object it holds, for a file that is not weights-only)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=weights_only, mmap=True)
    except UNREADABLE as err:
        if isinstance(err, pickle.UnpicklingError) and "GLOBAL" in str(err):  # refused, not unreadable
            raise SystemExit(refused_checkpoint(err, path)) from err
        raise UsageError(unreadable_checkpoint(path, err, option)) from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise UsageError(f"{option} {path} is not a Lightning checkpoint (no state_dict in it): give a .ckpt of fit")
    return checkpoint


def flat(value: Any, prefix: str) -> dict[str, Any]:
    """A nested config (Namespace / dict) as {dotted key: leaf value}; lists are leaves."""
    if hasattr(value, "as_dict"):
        value = value.as_dict()
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flat(item, f"{prefix}.{key}"))
        return out
    return {prefix: list(value) if isinstance(value, tuple) else value}


def keep_given_model(config: Any, given: Any, ckpt_path: str, linked: set[str]) -> list[str]:
    """Put the user's model config back over the checkpoint's hyper-parameters that Lightning merged into
    `config.model`; return the keys that differ (an info line names them). Linked keys come from the data."""
    merged = config.model
    if merged.get("class_path") != given.get("class_path"):
        raise UsageError(
            f"model.class_path={given.get('class_path')} but --ckpt_path {ckpt_path} holds a "
            f"{merged.get('class_path')}: give a checkpoint of this model, or that model's config"
        )
    ours, theirs = flat(given, "model"), flat(merged, "model")
    skip = {f"model.init_args.{name}" for name in linked}
    changed = [k for k in ours if k not in skip and not k.startswith(tuple(skip)) and ours[k] != theirs.get(k)]
    if changed:
        rank_zero_info(
            "Model values from the config and command line, not the checkpoint's: "
            + ", ".join(f"{k}={ours[k]!r} (checkpoint: {theirs.get(k)!r})" for k in changed)
        )
    config.model = given
    return changed


def model_from_checkpoint(cli: Any, subcommand: str, linked: set[str]) -> list[str]:
    """What Lightning's CLI does with a --ckpt_path's hyper-parameters, with two differences: the file is read as
    --weights_only says (Lightning reads it weights-only whatever it says), and the model values the config gives
    win over the checkpoint's (Lightning merges the checkpoint's over them), each one that differs named on one
    info line. Returns their keys. Without a model in the config, the checkpoint's hyper-parameters make it."""
    config = cli.config[subcommand]
    ckpt = config.get("ckpt_path")
    if not ckpt or not Path(ckpt).is_file():
        return []
    given = config.get("model")
    given = given.clone() if given is not None and given.get("class_path") else None
    checkpoint = read_checkpoint(ckpt, weights_only=config.get("weights_only") is not False)
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    hparams.pop("_instantiator", None)
    if hparams:
        if "_class_path" in hparams:
            hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
        cli.config = cli.parser.parse_object({subcommand: {"model": hparams}}, cli.config)
    if given is None:
        return []
    return keep_given_model(cli.config[subcommand], given, ckpt, linked)


def check_weights_fit(model: torch.nn.Module, ckpt_path: str, changed: list[str], weights_only: bool = True) -> None:
    """Refuse, naming the changed keys, a model that the checkpoint's weights do not fit (before anything runs)."""
    checkpoint = read_checkpoint(ckpt_path, weights_only)
    if hasattr(model, "check_targets"):  # other classes than the checkpoint's: say so by name, not by shape
        model.check_targets(checkpoint, ckpt_path)
    saved, own = checkpoint["state_dict"], model.state_dict()
    lazy = torch.nn.parameter.UninitializedParameter  # takes its shape from the checkpoint or the first batch
    mismatch = [
        k for k in saved if k in own and not isinstance(own[k], lazy) and tuple(saved[k].shape) != tuple(own[k].shape)
    ]
    missing, unexpected = sorted(set(own) - set(saved)), sorted(set(saved) - set(own))
    if not (mismatch or missing or unexpected):
        return
    if mismatch:
        k = mismatch[0]
        detail = f"{k} is {list(saved[k].shape)} in the checkpoint, {list(own[k].shape)} in this model"
    else:
        detail = f"missing {missing[:2]}, unexpected {unexpected[:2]}"
    keys = ", ".join(changed) or "the model config"
    raise UsageError(
        f"{keys}: the weights of --ckpt_path {ckpt_path} do not fit this model ({detail}); keep the checkpoint's "
        "value, or start a new run from the config instead of the checkpoint"
    )


def data_state(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The data module's state in a checkpoint (its statistics, input facts, a text tokenizer): Lightning keys it by
    the data module's class name, which the CLI's datamodule_hyper_parameters record."""
    class_path = str((checkpoint.get("datamodule_hyper_parameters") or {}).get("_class_path", ""))
    return checkpoint.get(class_path.rsplit(".", 1)[-1]) or {}


def check_data_fits(dm: Any, path: str, option: str, weights_only: bool = True) -> None:
    """Refuse a checkpoint whose net reads the data otherwise than this data module makes it (a text net trained
    with another tokenizer), in the data module's words (`checkpoint_refusal`), before anything runs."""
    refusal = getattr(dm, "checkpoint_refusal", None)
    if refusal is not None:
        why = refusal(data_state(read_checkpoint(path, weights_only, option)), f"{option} {path}")
        if why:
            raise UsageError(why)


def load_trained(cli: Any, ckpt_path: str) -> tuple[Any, Any]:
    """The model and data module a CLI built from a run's config, with the checkpoint's weights and the data statistics
    it was trained with, in eval mode: what export and serve deploy."""
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
            f"{str(err).splitlines()[0]} Use the config.yaml of the run that wrote the checkpoint."
        ) from err
    dm.setup()
    saved = checkpoint.get(type(dm).__qualname__)
    if saved:
        dm.load_state_dict(saved)  # the normalisation the model was trained with
    return model.eval(), dm


def model_of_checkpoint(checkpoint: dict[str, Any], path: str) -> Any:
    """The task module a checkpoint holds, built from its own hyper-parameters and weights alone, in eval mode: no
    config, no data (a run's checkpoint serves without its training data)."""
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    class_path = hparams.pop("_class_path", None)
    if not class_path:
        raise UsageError(f"{path} does not name its model class (a checkpoint of fit through the command line does)")
    hparams = {k: v for k, v in hparams.items() if not k.startswith("_")}
    model = import_class(class_path, "model.class_path")(**hparams)
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()
