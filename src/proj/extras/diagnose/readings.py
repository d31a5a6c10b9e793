"""What the rules read off a run's series, as numbers and as the sentences of their evidence."""

from __future__ import annotations

import math
from itertools import pairwise

from proj.extras.diagnose.evidence import Evidence


def clipping(ev: Evidence) -> list[str]:
    if not ev.summary.get("gradient_clip_val"):
        return ["no gradient clipping (trainer.gradient_clip_val)"]
    clipped = ev.column("clipped", "steps")
    return [f"clipping changed {sum(clipped) / len(clipped):.0%} of the recorded steps"] if clipped else []


def growth_line(ev: Evidence, growth: float) -> str:
    rows = [r for r in ev.steps if r.get("grad_norm", 0) == r.get("grad_norm", 0)]
    worst = max(rows, key=lambda r: r["grad_norm"])
    size = "became infinite" if math.isinf(worst["grad_norm"]) else f"reached {worst['grad_norm']:.3g} ({growth:.2g}x"
    size += "" if math.isinf(worst["grad_norm"]) else " its median over the first quarter of the run)"
    return f"the gradient norm {size} at step {worst['step']:.0f}"


def listed(shares: dict[str, float]) -> str:
    """`a 80%, b 75%`, or the first and last of many: `26 blocks, body.30 .. head, 95-100%`."""
    if len(shares) <= 4:
        return ", ".join(f"{name} {share:.0%}" for name, share in shares.items())
    names, low, high = list(shares), min(shares.values()), max(shares.values())
    return f"{len(shares)} blocks, {names[0]} .. {names[-1]}, {low:.0%}" + (f"-{high:.0%}" if high > low else "")


def loss_trend(ev: Evidence) -> str:
    losses = ev.column("train/loss_epoch")
    if len(losses) < 2:
        return "training loss: fewer than 2 epochs"
    falling = sum(b < a for a, b in pairwise(losses)) / (len(losses) - 1)
    return f"training loss {losses[0]:.3g} -> {losses[-1]:.3g} over {len(losses)} epochs, down in {falling:.0%} of them"


def jumps(values: list[float]) -> list[int]:
    """Epochs where a validation loss jumped over 1.5x the epoch before and a later epoch fell back under it: an
    oscillation (a loss that rises and stays up is overfitting, not this)."""
    return [
        i
        for i in range(1, len(values) - 1)
        if values[i] > 1.5 * values[i - 1] and min(values[i + 1 :]) < values[i] / 1.5
    ]


def trend(values: list[float]) -> float:
    """The least-squares slope per step of a short series."""
    n = len(values)
    xm, ym = (n - 1) / 2, statistics_mean(values)
    return sum((i - xm) * (v - ym) for i, v in enumerate(values)) / sum((i - xm) ** 2 for i in range(n))


def statistics_mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan
