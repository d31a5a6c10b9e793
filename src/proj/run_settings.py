"""A run's settings as the flat keys people compare runs by: optimizer=AdamW, lr=0.003, schedule=CosineAnnealingLR,
batch_size=64, net=SmallCNN, net.widths=[32, 64], ... instead of the nested config with its class_path plumbing.

TensorBoard's HPARAMS tab (the tensorboard_views extra's HParams) and the model card (the run_record extra) both
write these keys, so the loggers and the card agree.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as L

# Model and data arguments that say how the run is wired, not what is compared between runs.
PLUMBING = {
    "num_outputs", "input_shape", "targets", "num_workers", "pin_memory", "persistent_workers",
    "device_resident", "predict_split", "net", "optim",
}  # fmt: skip


def readable_hparams(pl_module: L.LightningModule, datamodule: Any, trainer: L.Trainer) -> dict[str, Any]:
    """The keys runs are compared by, flat: model and net, optimizer and schedule of each stage, data, trainer."""
    hp = dict(pl_module.hparams)
    params: dict[str, Any] = {"model": class_name(hp.get("_class_path") or type(pl_module).__name__)}
    net = hp.get("net")
    if isinstance(net, Mapping):
        params["net"] = class_name(net.get("class_path", ""))
        params.update({f"net.{k}": v for k, v in (net.get("init_args") or {}).items()})
    params.update(optim_params(hp.get("optim")))
    params.update({k: v for k, v in hp.items() if not k.startswith("_") and k not in PLUMBING})
    if datamodule is not None:
        data = dict(getattr(datamodule, "hparams", {}))
        params["data"] = class_name(data.get("_class_path") or type(datamodule).__name__)
        augment = getattr(datamodule, "augment", None)
        params["augmentation"] = ",".join(type(m).__name__ for m in augment) if augment is not None else "none"
        params.update({k: v for k, v in data.items() if not k.startswith("_") and k not in PLUMBING})
    params.update(trainer_params(trainer))
    return {k: plain(v) for k, v in params.items() if not unused(k, params)}


def unused(key: str, params: Mapping[str, Any]) -> bool:
    """Settings that change nothing in this run (speed switches, options of a method not chosen): fewer columns."""
    if key in ("channels_last", "compile", "activation_checkpointing"):
        return True
    if key == "cv_fold" or key == "cv_folds":
        return not params.get("cv_folds")
    if key == "mix_prob":
        return not (params.get("mixup_alpha") or params.get("cutmix_alpha"))
    if key.startswith("smote"):
        return "smote" not in str(params.get("sampler", ""))
    if key.startswith("gan_"):
        return "gan" not in str(params.get("sampler", ""))
    return False


def optim_params(optim: Any) -> dict[str, Any]:
    """optimizer, lr, weight_decay, schedule, interval, warmup_steps (stage<i>.-prefixed from the second stage)."""
    if not isinstance(optim, Mapping):
        return {}
    params = {k: optim[k] for k in ("no_decay_1d", "l1", "scale_lr") if k in optim}
    if optim.get("groups"):
        params["groups"] = "; ".join(f"{g.get('pattern')} x{g.get('lr_scale', 1.0)}" for g in optim["groups"])
    for i, stage in enumerate(optim.get("stages") or []):
        prefix = f"stage{i}." if i else ""
        if i:
            params[prefix + "start_epoch"] = stage.get("start_epoch")
        optimizer = stage.get("optimizer") or {}
        params[prefix + "optimizer"] = class_name(optimizer.get("class_path", ""))
        for k, v in (optimizer.get("init_args") or {}).items():  # lr and weight_decay by their own names
            params[prefix + (k if k in ("lr", "weight_decay") else f"optimizer.{k}")] = v
        schedulers = stage.get("lr_scheduler") or []
        schedulers = schedulers if isinstance(schedulers, list) else [schedulers]
        params[prefix + "schedule"] = ">".join(class_name(s.get("class_path", "")) for s in schedulers) or "none"
        if len(schedulers) == 1:
            params.update({f"{prefix}schedule.{k}": v for k, v in (schedulers[0].get("init_args") or {}).items()})
        for k in ("interval", "warmup_steps", "milestones"):
            if stage.get(k) is not None:
                params[prefix + k] = stage[k]
    return params


def trainer_params(trainer: L.Trainer) -> dict[str, Any]:
    clip = trainer.gradient_clip_val
    params = {
        "max_epochs": trainer.max_epochs,
        "precision": trainer.precision,
        "gradient_clip_val": clip or 0.0,
        "accumulate_grad_batches": trainer.accumulate_grad_batches,
        "world_size": trainer.world_size,
    }
    if clip:
        params["gradient_clip_algorithm"] = getattr(trainer.gradient_clip_algorithm, "value", "norm")
    if os.environ.get("PL_GLOBAL_SEED"):  # seed_everything's seed, as Lightning records it
        params["seed"] = int(os.environ["PL_GLOBAL_SEED"])
    if trainer.max_steps != -1:
        params["max_steps"] = trainer.max_steps
    return params


def class_name(class_path: str) -> str:
    return class_path.rsplit(".", 1)[-1]


def plain(value: Any) -> Any:
    """A value every logger shows as it is: numbers, strings and booleans; lists and None as text."""
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return "[" + ", ".join(str(plain(v)) for v in value) + "]"
    return str(value)
