"""The summary of a repeat: each seed's test metrics, and for every metric its mean, sample standard deviation and
95% Student-t interval of the mean, in summary.json and summary.csv."""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path
from typing import Any

from scipy import stats

CONFIDENCE = 0.95


def summarise(results: dict[int, dict[str, float]]) -> dict[str, Any]:
    """Over the seeds' metrics (those every seed has): the mean, the sample std, and the interval mean +- t * std /
    sqrt(n), with t of n - 1 degrees of freedom (a handful of seeds: the normal's 1.96 would be too narrow)."""
    keys = sorted(set.intersection(*(set(r) for r in results.values())))
    n = len(results)
    t = float(stats.t.ppf((1 + CONFIDENCE) / 2, n - 1))
    mean = {k: statistics.mean(r[k] for r in results.values()) for k in keys}
    std = {k: statistics.stdev(r[k] for r in results.values()) for k in keys}
    half = {k: t * std[k] / math.sqrt(n) for k in keys}
    interval = {k: [mean[k] - half[k], mean[k] + half[k]] for k in keys}
    seeds = {str(s): {k: r[k] for k in keys} for s, r in results.items()}
    return {"seeds": seeds, "mean": mean, "std": std, "interval": interval, "n": n}


def write_summary(out: Path, summary: dict[str, Any]) -> None:
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    keys = sorted(summary["mean"])
    rows = [[seed, *(metrics[k] for k in keys)] for seed, metrics in summary["seeds"].items()]
    rows += [[name, *(summary[name][k] for k in keys)] for name in ("mean", "std")]
    rows += [[name, *(summary["interval"][k][i] for k in keys)] for i, name in enumerate(("low", "high"))]
    with open(out / "summary.csv", "w", newline="") as f:
        csv.writer(f).writerows([["seed", *keys], *rows])


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """One line a metric: `test/acc: 0.9123 +- 0.0131 (95% interval 0.8797 .. 0.9449) over 3 seeds`."""
    return [
        f"{k}: {m:.4f} +- {summary['std'][k]:.4f} (95% interval {summary['interval'][k][0]:.4f} .. "
        f"{summary['interval'][k][1]:.4f}) over {summary['n']} seeds"
        for k, m in sorted(summary["mean"].items())
    ]
