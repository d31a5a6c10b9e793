"""The config as written, checked and settled before anything is built or a process is spawned.

`settle_config` makes the config consistent where the intent is plain: one progress bar and one model summary
(the last named: a stacked preset replaces the default's), no callback that needs a logger when `trainer.logger`
is false, SyncBatchNorm on GPUs only, a checkpoint read weights-only unless told otherwise. Lightning would refuse
each of these once the run starts.

`config_refusal` says, in one line naming the key and the fix, why the config cannot run as written: a missing
checkpoint or --init_from file, a trainer setting this machine cannot run (the files of configs/trainer/ must run
as written on a CPU machine, or be refused: a GPU-only setting would fail deep inside Lightning or torch, once per
spawned process, and a multi-node run started without its launcher would wait forever for the other nodes), an
optim config that cannot work.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from proj.cli.init_from import init_from_refusal
from proj.optim import OptimConfig, check_stages_start_in_run, import_class, parse_stages

LIGHTNING_CKPT_NAMES = ("best", "last", "hpc", "registry")  # ckpt_path values that name no file


def settle_config(config: Any) -> None:
    """Settle what the config leaves to be settled (see the module's docstring)."""
    if config.get("weights_only", False) is None:
        config.weights_only = True  # never unpickle arbitrary objects from a checkpoint unless told to
    one_progress_bar(config)
    drop_logger_callbacks_without_logger(config)
    sync_batchnorm_on_gpus_only(config)


def config_refusal(config: Any, fitting: bool) -> str | None:
    """Why the config cannot run as written, naming the key and the fix; None when it can."""
    return (
        checkpoint_refusal(config.get("ckpt_path"))
        or init_from_refusal(config, fitting)
        or trainer_refusal(config.get("trainer") or {})
        or optim_refusal(config)
    )


def checkpoint_refusal(ckpt: str | None) -> str | None:
    if ckpt and ckpt not in LIGHTNING_CKPT_NAMES and "://" not in ckpt and not Path(ckpt).exists():
        return f"--ckpt_path {ckpt} does not exist: give a checkpoint file (<run>/checkpoints/*.ckpt)"
    return None


def optim_refusal(config: Any) -> str | None:
    """The model's optim config parsed as the model will parse it (proj.optim), so a mistake is reported plainly,
    not inside jsonargparse's Union diagnostics; a stage starting after the last epoch is a warning."""
    optim = (config.get("model") or {}).get("init_args", {}).get("optim")
    if optim is None:
        return None
    try:
        stages = parse_stages(OptimConfig(**optim.as_dict() if hasattr(optim, "as_dict") else optim))
        later = check_stages_start_in_run(stages, (config.get("trainer") or {}).get("max_epochs"))
    except ValueError as err:
        return f"model.init_args.{err}"
    for warning in later:
        rank_zero_warn(warning)
    return None


def one_progress_bar(config: Any) -> None:
    """Keep the progress bar (and the model summary) named last: configs/trainer/rich.yaml stacked on the default
    config (which names a TQDM bar, to set its refresh rate) replaces it, where Lightning would refuse two
    progress bars. With `--trainer.enable_progress_bar false` (or enable_model_summary false) none is kept, where
    Lightning would refuse the one named."""
    from lightning.pytorch.callbacks import ModelSummary
    from lightning.pytorch.callbacks.progress import ProgressBar

    trainer = config.get("trainer") or {}
    for flag, base in (("enable_progress_bar", ProgressBar), ("enable_model_summary", ModelSummary)):
        callbacks = trainer.get("callbacks") or []
        found = [i for i, c in enumerate(callbacks) if is_a(c, base)]
        keep = found[-1:] if trainer.get(flag) is not False else []
        if len(found) > len(keep):
            trainer.callbacks = [c for i, c in enumerate(callbacks) if i not in found or i in keep]


def is_a(callback: Any, base: type) -> bool:
    """Whether a callback of the config (a class_path and init_args, or an object) is a `base`."""
    class_path = str(callback.get("class_path", "")) if hasattr(callback, "get") else ""
    try:
        cls = import_class(class_path, "trainer.callbacks") if class_path else type(callback)
    except (ValueError, ImportError):
        return False  # Lightning reports a bad class_path when it builds the callback
    return isinstance(cls, type) and issubclass(cls, base)


def drop_logger_callbacks_without_logger(config: Any) -> None:
    """`--trainer.logger false` turns the logs off: the default config's LearningRateMonitor, which Lightning
    refuses without a logger (once training starts), goes too. The template's views skip themselves."""
    trainer = config.get("trainer") or {}
    if trainer.get("logger") not in (False, []) or not trainer.get("callbacks"):
        return
    kept = [c for c in trainer.callbacks if not str(c.get("class_path", "")).endswith("LearningRateMonitor")]
    if len(kept) < len(trainer.callbacks):
        rank_zero_info("trainer.logger is false: the learning rate is not logged (LearningRateMonitor left out).")
        trainer.callbacks = kept


def sync_batchnorm_on_gpus_only(config: Any) -> None:
    """configs/trainer/ddp.yaml asks for SyncBatchNorm, which torch runs on GPUs only ("SyncBatchNorm layers only
    work with GPU modules", in every spawned process): on CPUs each process keeps its own BatchNorm statistics."""
    trainer = config.get("trainer") or {}
    accelerator = str(trainer.get("accelerator") or "auto")
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if trainer.get("sync_batchnorm") and on_cpu:
        trainer.sync_batchnorm = False
        rank_zero_info("trainer.sync_batchnorm=true needs GPUs: off on CPUs (each process normalises its own batch)")


# Variables a launcher (torchrun, SLURM, a cluster environment) sets: without them no other node will ever join.
LAUNCHED = ("WORLD_SIZE", "NODE_RANK", "SLURM_NTASKS", "MASTER_ADDR")


def trainer_refusal(trainer: Any) -> str | None:
    """What the trainer config asks of this machine that it lacks: said before anything is built or spawned."""
    accelerator = str(trainer.get("accelerator") or "auto")
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        return (
            f"trainer.accelerator={accelerator}: torch sees no CUDA GPU on this machine; use "
            "configs/trainer/cpu.yaml or trainer.accelerator=auto"
        )
    accumulate = trainer.get("accumulate_grad_batches")
    if isinstance(accumulate, int) and accumulate < 1:  # Lightning would divide by it at the first step
        return f"trainer.accumulate_grad_batches={accumulate}: give 1 (no accumulation) or more batches per step"
    nodes = trainer.get("num_nodes") or 1
    if nodes > 1 and not any(name in os.environ for name in LAUNCHED):
        return (
            f"trainer.num_nodes={nodes}: the other nodes join only through a launcher; start it with "
            "scripts/slurm.sbatch or scripts/torchrun_multinode.sh (or set trainer.num_nodes=1)"
        )
    return None
