"""The callbacks a trainer config names, made consistent before the Trainer is built: one progress bar and one
model summary (the last named: a stacked preset replaces the default's), and none that needs a logger when
`trainer.logger` is false. Lightning would refuse each of these once the run starts."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.utilities import rank_zero_info

from proj.optim import import_class


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
