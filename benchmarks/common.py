"""What the benchmarks share: medians with min / max over interleaved repeats, printed tables, and the one
`RESULT:` line per benchmark (and any `RESULT[row]:` lines) that `make bench` (benchmarks/report.py) copies into
benchmarks/README.md."""

import statistics
from collections.abc import Callable, Sequence


def interleave(cases: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Run every case once per repeat, in turn, the order reversed every other repeat (a b c c b a a b c ...), so
    that a slow spell of the machine falls on all of them alike instead of on whichever ran during it, and no case
    always runs right after another (whose memory, caches and clocks it would inherit)."""
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for repeat in range(repeats):
        for name in list(cases)[:: -1 if repeat % 2 else 1]:
            samples[name].append(cases[name]())
    return samples


def table(samples: dict[str, list[float]], unit: str, baseline: str | None = None, width: int = 44, best=min) -> str:
    """One line per case: median, min, max and, with a baseline, the ratios of the medians and of the best
    runs to the baseline's. On a shared machine noise only slows a run down, so the best runs are the steadiest
    estimate: `best=min` for times, `best=max` for rates such as samples / s."""
    header = f"{'':<{width}}{'median ' + unit:>20}{'min':>10}{'max':>10}"
    lines = [header + (f"{'ratio':>9}{best.__name__ + ' ratio':>11}" if baseline else "")]
    for name, values in samples.items():
        line = f"{name:<{width}}{statistics.median(values):>20.3f}{min(values):>10.3f}{max(values):>10.3f}"
        if baseline:
            line += f"{ratio(samples, name, baseline):>8.3f}x{ratio(samples, name, baseline, best):>10.3f}x"
        lines.append(line)
    return "\n".join(lines)


def ratio(samples: dict[str, Sequence[float]], case: str, baseline: str, of=statistics.median) -> float:
    """of(case) / of(baseline): of the medians by default, `of=min` (or max) for the best runs."""
    return of(samples[case]) / of(samples[baseline])


def result(text: str, row: str | None = None) -> None:
    """The headline of a benchmark, one line: benchmarks/report.py puts it in the summary table, in the benchmark's
    own row, or in a row of its own titled `row` (a figure that must not drown among the others)."""
    print(f"RESULT[{row}]: {text}" if row else f"RESULT: {text}")
