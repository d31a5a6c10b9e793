"""Runs constructed to have one problem each, for diagnose's rules: what `tests/extras/test_diagnose.py` trains
tiny and `benchmarks/diagnose_rules.py` trains in full. Each is a config stacked on configs/default.yaml (YAML,
because the command line cannot index the optim stages) and the epochs it needs to show its problem."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml


def mlp(**net: object) -> dict:
    return {"model": {"init_args": {"net": {"class_path": "proj.nets.MLP", "init_args": {"dropout": 0.0, **net}}}}}


def stage(optimizer: str, lr: float, scheduler: dict | None = None, **options: object) -> dict:
    one = {"optimizer": {"class_path": optimizer, "init_args": {"lr": lr, **options}}}
    if scheduler:
        one.update(scheduler)
    return {"model": {"init_args": {"optim": {"stages": [one]}}}}


def merged(*parts: dict) -> dict:
    out: dict = {}
    for part in parts:
        for key, value in part.items():
            out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


STEP_DECAY = {  # the lr / 100 every 5 optimizer steps: the schedule is over before the model has learned
    "lr_scheduler": {"class_path": "torch.optim.lr_scheduler.StepLR", "init_args": {"step_size": 5, "gamma": 0.01}},
    "interval": "step",
}
DIGITS_5_PERCENT = {"data": {"class_path": "proj.data.ImbalancedDigitsDataModule",
                             "init_args": {"minority_classes": list(range(10)), "keep_fraction": 0.05}}}  # fmt: skip
IMBALANCED = {"data": {"class_path": "proj.data.ImbalancedDigitsDataModule",
                       "init_args": {"minority_classes": [0, 1, 2, 3, 4], "keep_fraction": 0.05}}}  # fmt: skip
NO_REGULARISATION = merged(
    {"model": {"init_args": {"label_smoothing": 0.0, "net": {"init_args": {"dropout": 0.0}}}}},
    stage("torch.optim.AdamW", 3e-3, weight_decay=0.0),
)

# rule -> (config stacked on the default, epochs)
CASES: dict[str, tuple[dict, int]] = {
    "lr_too_high": (merged(stage("torch.optim.SGD", 5.0), {"trainer": {"gradient_clip_val": None}}), 6),
    "lr_too_low": (stage("torch.optim.AdamW", 1e-6), 6),
    "lr_decayed_early": (stage("torch.optim.AdamW", 3e-3, STEP_DECAY), 6),
    "vanishing_gradients": (mlp(hidden=[32] * 20, batch_norm=False, activation="sigmoid"), 4),
    "exploding_gradients": (
        merged(mlp(hidden=[256] * 6, batch_norm=False), stage("torch.optim.SGD", 0.5, momentum=0.9),
               {"trainer": {"gradient_clip_val": None, "log_every_n_steps": 2}}),
        4,
    ),
    "dead_units": (merged(mlp(hidden=[128, 128], batch_norm=False), stage("torch.optim.Adam", 0.1)), 6),
    "underfitting": ({"model": {"init_args": {"net": {"init_args": {"widths": [2]}}}}}, 8),
    "overfitting": (merged(DIGITS_5_PERCENT, NO_REGULARISATION, mlp(hidden=[512, 512], batch_norm=False)), 80),
    "class_imbalance": (IMBALANCED, 10),
    "stopped_while_improving": ({}, 30),
    "train_test_duplicates": ({}, 4),
}  # fmt: skip


def case_args(rule: str, folder: Path) -> list[str]:
    """The fit arguments of a constructed run (its config files written into `folder`)."""
    text, epochs = CASES[rule]
    folder.mkdir(parents=True, exist_ok=True)
    args = ["--config", str(Path(__file__).resolve().parents[1] / "configs" / "default.yaml")]
    if rule == "train_test_duplicates":
        args += ["--config", str(duplicated_table(folder))]
    if rule == "stopped_while_improving":  # the default's callbacks, early stopping with a patience of 1 epoch
        callbacks = yaml.safe_load(Path(args[1]).read_text())["trainer"]["callbacks"]
        for callback in callbacks:
            if "EarlyStopping" in callback["class_path"]:
                callback["init_args"]["patience"] = 1
        text = {"trainer": {"callbacks": callbacks}}
    if text:
        (folder / f"{rule}.yaml").write_text(yaml.safe_dump(text, sort_keys=False))
        args += ["--config", str(folder / f"{rule}.yaml")]
    return [*args, f"--trainer.max_epochs={epochs}", "--trainer.enable_progress_bar=false"]


def duplicated_table(folder: Path) -> Path:
    """The breast-cancer table with every row twice: copies land on both sides of any split."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    rows = np.concatenate([data.data, data.data])
    labels = np.concatenate([data.target, data.target])
    header = ",".join([f"f{i}" for i in range(rows.shape[1])] + ["label"])
    lines = [header] + [",".join(f"{v:.6g}" for v in row) + f",{y}" for row, y in zip(rows, labels, strict=True)]
    (folder / "table.csv").write_text("\n".join(lines) + "\n")
    config = folder / "duplicated_table.yaml"
    config.write_text(
        f"data: {{class_path: proj.data.CSVDataModule, init_args: {{path: {folder / 'table.csv'}, target: label}}}}\n"
        "model: {init_args: {net: {class_path: proj.nets.MLP}}}\n"
    )
    return config
