"""model_card.md: the run record's card facts as a page a person reads, with the sections only its author can
write ("Intended use", "Limitations") left as fields to fill.

The card is re-rendered at the end of every command run into the run (a resumed fit, a later test): what the
user wrote under those two headings, and any section they added, is kept as they wrote it.
"""

from __future__ import annotations

from typing import Any

USER_SECTIONS = {
    "Intended use": "_To fill in: who should use this model, for what, on what kind of data; uses it is not for._",
    "Limitations": "_To fill in: where it fails or was never tested (data it did not see, subgroups, conditions), "
    "and what the metrics above do not say._",
}
FIGURES = {  # the names the evaluation's figures are linked by
    "roc": "ROC curves",
    "precision_recall": "precision-recall curves",
    "predicted_vs_true": "predicted vs true",
    "highest_loss": "the highest-loss samples",
}
NOTE = (
    "<!-- Written by proj from run.json at the end of every command run into this run. Edit the sections "
    '"Intended use" and "Limitations" (and add your own): they are kept when the card is written again. -->'
)


def render_card(record: dict[str, Any], title: str, previous: str | None = None) -> str:
    card = record.get("card") or {}
    kept = sections(previous or "")
    generated = {
        "Task": task_section(card),
        "Data": data_section(card),
        "Classes" if "classes" in card else "Targets": names_section(card),
        "Final metrics": metrics_section(card),
        "Training recipe": card.get("recipe") or "_No fit recorded in this run._",
        "Run": run_section(record),
    }
    own = {name: kept.get(name, text) for name, text in USER_SECTIONS.items()}
    added = {name: text for name, text in kept.items() if name not in {*generated, *own, "Classes", "Targets"}}
    body = [f"# Model card: {title}", "", NOTE, ""]
    for name, text in {**generated, **own, **added}.items():
        body += [f"## {name}", "", text.strip("\n"), ""]
    return "\n".join(body)


def sections(text: str) -> dict[str, str]:
    """The `## ` sections of a card by heading, each with its text as written."""
    found: dict[str, str] = {}
    name = None
    for line in text.splitlines():
        if line.startswith("## "):
            name = line[3:].strip()
            found[name] = ""
        elif name is not None:
            found[name] += line + "\n"
    return found


def task_section(card: dict[str, Any]) -> str:
    names = card.get("classes") or card.get("target_names") or []
    kind = "labels" if card.get("task") == "multilabel" else "classes"
    what = f"{len(names)} {kind}" if "classes" in card else f"{len(names)} target(s)" if names else ""
    net = f" on {card['net']}" if card.get("net") else ""
    return f"{card.get('task', 'unknown')}{': ' + what if what else ''}, with {card.get('model')}{net}."


def data_section(card: dict[str, Any]) -> str:
    data = dict(card.get("data") or {})
    name = data.pop("class", None) or "unknown"
    settings = ", ".join(f"{k} {v}" for k, v in data.items())
    splits = ", ".join(f"{k} {v}" for k, v in (card.get("splits") or {}).items())
    lines = [f"{name}{f' ({settings})' if settings else ''}."]
    if splits:
        lines.append(f"Split sizes: {splits}.")
    return "\n\n".join(lines)


def names_section(card: dict[str, Any]) -> str:
    names = card.get("classes") or card.get("target_names") or []
    if card.get("thresholds"):  # multi-label: each label with its decision threshold
        return ", ".join(f"`{n}` (threshold {t:g})" for n, t in zip(names, card["thresholds"], strict=False))
    return ", ".join(f"`{n}`" for n in names) if names else "_Not known to the model._"


def metrics_section(card: dict[str, Any]) -> str:
    metrics = card.get("metrics") or {}
    if not metrics:
        return "_None logged yet._"
    intervals = card.get("intervals") or {}
    if intervals:  # the level of the first: Evaluation computes every interval at one level
        level = next(iter(intervals.values())).get("level", 0.95)
        rows = [f"| metric | value | {level:.0%} interval |", "| --- | --- | --- |"]
        rows += [f"| {k} | {v:.4g} | {interval_text(intervals.get(k))} |" for k, v in metrics.items()]
    else:
        rows = ["| metric | value |", "| --- | --- |", *(f"| {k} | {v:.4g} |" for k, v in metrics.items())]
    text = "\n".join(rows) + "\n\nThe last values each split logged (test: the checkpoint the last test ran on)."
    return "\n\n".join([text, *evaluation_lines(card)])


def interval_text(interval: dict[str, float] | None) -> str:
    return f"{interval['low']:.4g} to {interval['high']:.4g}" if interval else ""


def evaluation_lines(card: dict[str, Any]) -> list[str]:
    """Links to what the diagnose extra wrote into the run, relative to the card: the evaluation's JSON and figures,
    and the report."""
    lines = []
    evaluation = card.get("evaluation") or {}
    if card.get("intervals"):
        lines.append(
            "Intervals: a percentile bootstrap over the test samples (each resample draws as many samples, with "
            "replacement): how far the value moves with the choice of test samples alone. Not the spread over "
            "training seeds."
        )
    if evaluation.get("file"):
        file = evaluation["file"]
        links = [f"[{FIGURES.get(name, name)}]({path})" for name, path in (evaluation.get("figures") or {}).items()]
        what = "per-class metrics, the highest-loss samples"
        lines.append(f"Evaluation: [{file}]({file}) ({what}); " + (", ".join(links) or "no figures") + ".")
    if card.get("diagnosis"):
        lines.append(f"Diagnosis: [{card['diagnosis']}]({card['diagnosis']})")
    return lines


def run_section(record: dict[str, Any]) -> str:
    git = record.get("git") or {}
    dirty = " (uncommitted changes)" if git.get("dirty") else ""
    code = f"git {git['commit'][:12]}{dirty}" if git.get("commit") else ""
    device = record.get("device") or {}
    where = ", ".join(device.get("device_names") or []) or device.get("accelerator", "")
    if device:
        where = f"{device.get('world_size', 1)} x {device.get('accelerator')} ({where}), {device.get('precision')}"
    packages = record.get("packages") or {}
    versions = ", ".join(f"{k} {packages[k]}" for k in ("torch", "lightning") if k in packages)
    facts = [code, where, versions, f"seed {record.get('seed')}", f"{record.get('wall_time_s', 0):.0f} s of training"]
    return "; ".join(f for f in facts if f) + ". Everything else, and every command run on it: run.json."
