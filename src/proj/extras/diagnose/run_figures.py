"""The figures of diagnose's report, drawn from the health files: the epoch curves with the learning rate, each
block's gradient norm, update / weight ratio and dead units over the steps. matplotlib is imported here only:
it is not needed to train."""

from __future__ import annotations

from pathlib import Path

from proj.extras.diagnose.evidence import Evidence
from proj.extras.diagnose.rules import DEAD, HEALTHY_UPDATE


def draw_run(ev: Evidence, out: Path) -> dict[str, str]:
    """Write the figures into `out`; returns {name: file name} of those drawn (none without health files)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drawn = {}
    for name, draw in (("curves", curves), ("gradients", gradients), ("updates", updates), ("activations", dead)):
        figure = draw(ev, plt)
        if figure is not None:
            figure.savefig(out / f"{name}.png", dpi=90, bbox_inches="tight")
            plt.close(figure)
            drawn[name] = f"{name}.png"
    return drawn


def curves(ev: Evidence, plt):
    if not ev.epochs:
        return None
    figure, (loss, metric, lr) = plt.subplots(1, 3, figsize=(13, 3.4))
    epochs = [int(r["epoch"]) for r in ev.epochs]
    for axis, names in ((loss, ("train/loss_epoch", "val/loss")), (metric, (f"train/{ev.metric}", f"val/{ev.metric}"))):
        for name in names:
            values = [r.get(name) for r in ev.epochs]
            if any(v is not None for v in values):
                axis.plot(epochs, values, marker=".", label=name)
        axis.set_xlabel("epoch")
        axis.legend()
        axis.grid(alpha=0.3)
    loss.set_title("loss")
    metric.set_title(ev.metric)
    steps = ev.column("step", "steps")
    lr.plot(steps, ev.column("lr", "steps")) if steps else lr.plot(epochs, ev.column("lr"))
    lr.set(title="learning rate", xlabel="optimizer step" if steps else "epoch", yscale="log")
    lr.grid(alpha=0.3)
    return figure


def per_block(ev: Evidence, plt, prefix: str, title: str, line: float | None = None):
    series = {name: values for name, values in ev.blocks(prefix).items() if values}
    if not series:
        return None
    figure, axis = plt.subplots(figsize=(8, 3.6))
    steps = ev.column("step", "steps")
    for name, values in series.items():
        axis.plot(steps[: len(values)], values, label=name, lw=1)
    if line is not None:
        axis.axhline(line, color="k", ls="--", lw=1)
    axis.set(title=title, xlabel="optimizer step", yscale="log" if prefix != "dead" else "linear")
    axis.legend(fontsize=7, ncol=2 if len(series) > 8 else 1, loc="center left", bbox_to_anchor=(1, 0.5))
    axis.grid(alpha=0.3)
    return figure


def gradients(ev: Evidence, plt):
    return per_block(ev, plt, "grad", "gradient norm per block, before clipping")


def updates(ev: Evidence, plt):
    return per_block(
        ev, plt, "update", f"update / weight per step (dashed: {HEALTHY_UPDATE:g}, healthy)", HEALTHY_UPDATE
    )


def dead(ev: Evidence, plt):
    return per_block(ev, plt, "dead", f"share of dead units per block (dashed: {DEAD:.0%})", DEAD)
