"""<run>/diagnose/report.md: the findings with their figures, or why the run looks healthy, the --try comparisons,
and the test evaluation with its intervals. Markdown with relative image links: TensorBoard users open it in an
editor's preview, GitHub and mkdocs render it as it is, and it travels with the run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from proj.extras.diagnose.evidence import Evidence, median
from proj.extras.diagnose.rules import HEALTHY_UPDATE, Finding


def write_report(
    ev: Evidence, findings: list[Finding], figures: dict[str, str], tried: list[dict[str, Any]], out: Path
) -> Path:
    lines = [f"# Diagnosis of `{ev.run.resolve()}`", ""]
    if not ev.steps:
        lines += ["_No health files (`health/`): add `proj.extras.diagnose.HealthMonitor` to the run's callbacks; "
                  "the rules on gradients, updates, spikes and dead units could not look._", ""]  # fmt: skip
    if findings:
        lines += [f"{len(findings)} finding(s): " + ", ".join(f"[{f.title}](#{anchor(f.title)})" for f in findings), ""]
        for finding in findings:
            lines += finding_section(finding, figures)
    else:
        lines += ["## Healthy", "", "No rule fired. What was checked, with this run's numbers:", ""]
        lines += [f"- {line}" for line in healthy_reasons(ev)] + [""]
    if tried:
        lines += tried_section(tried)
    lines += evaluation_section(ev)
    lines += ["## Curves", ""] + [f"![{name}]({file})" for name, file in figures.items()] + [""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def anchor(title: str) -> str:
    return title.lower().replace(" ", "-").replace(",", "")


def finding_section(finding: Finding, figures: dict[str, str]) -> list[str]:
    lines = [f"## {finding.title}", "", "Evidence:", ""] + [f"- {line}" for line in finding.evidence]
    lines += ["", f"Likely cause: {finding.cause}", "", f"Fix: {finding.fix}"]
    if finding.override:
        lines += ["", f"Override: [fix_{finding.rule}.yaml](fix_{finding.rule}.yaml)", "", "```"]
        lines += [str(finding.numbers.get("command", "")), "```"]
    name = finding.figure.removesuffix(".png")
    if name in figures:
        lines += ["", f"![{name}]({figures[name]})"]
    return [*lines, ""]


def healthy_reasons(ev: Evidence) -> list[str]:
    reasons = []
    updates = median([median(v) for v in ev.blocks("update").values()])
    if updates == updates:
        reasons.append(f"update / weight ratio: median {updates:.2g} per step (healthy: about {HEALTHY_UPDATE:g})")
    grads = [v for v in ev.blocks("grad").values() if v]
    if len(grads) >= 2:
        ratio = median([a / max(b, 1e-30) for a, b in zip(grads[0], grads[-1], strict=False)])
        reasons.append(f"first / last block gradient norm: median {ratio:.2g} (neither under 1e-3 nor over 70)")
    spikes, nonfinite = sum(ev.column("spikes", "steps")), sum(ev.column("nonfinite", "steps"))
    if ev.steps:
        reasons.append(f"{spikes:.0f} loss spike(s), {nonfinite:.0f} non-finite loss(es)")
        dead = max((median(v) for v in ev.blocks("dead").values() if v), default=0.0)
        reasons.append(f"dead units: at most {dead:.0%} of a block (a problem from 70%)")
    train, val, loss = ev.column(f"train/{ev.metric}"), ev.column(f"val/{ev.metric}"), ev.column("val/loss")
    if train and val:
        gap = train[-1] - val[-1]
        reasons.append(f"last epoch: training {ev.metric} {train[-1]:.3f}, validation {val[-1]:.3f} (gap {gap:+.3f})")
    if loss:
        reasons.append(f"best validation loss at epoch {loss.index(min(loss))} of {len(loss)}")
    if ev.duplicates:
        reasons.append(f"{ev.duplicates[0]} of {ev.duplicates[1]} test inputs also in the training split")
    return reasons


def tried_section(tried: list[dict[str, Any]]) -> list[str]:
    lines = ["## --try: each fix against the original, same budget", "",
             "| rule | metric | epochs | original | fixed | difference (95% paired bootstrap) | |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for t in tried:
        d = t["difference"]
        verdict = "helped" if t["helped"] else "not shown to help"
        lines.append(
            f"| {t['rule']} | {t['metric']} | {t['epochs']} | {t['original']:.4f} | {t['fixed']:.4f} | "
            f"{d['value']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}] | {verdict} |"
        )
    return [*lines, ""]


def evaluation_section(ev: Evidence) -> list[str]:
    report = ev.evaluation
    if not report:
        return [
            "## Test evaluation",
            "",
            "_No `evaluation/test.json`: the run was not tested with the Evaluation callback._",
            "",
        ]
    lines = ["## Test evaluation", "", f"{report.get('samples')} test samples; 95% bootstrap intervals.", "",
             "| metric | value | 95% interval |", "|---|---|---|"]  # fmt: skip
    for name, m in (report.get("metrics") or {}).items():
        lines.append(f"| {m.get('logged', name)} | {m['value']:.4f} | {m['low']:.4f} .. {m['high']:.4f} |")
    rows = sorted(report.get("per_class") or [], key=lambda r: r.get("f1", r.get("r2", 0.0)))[:10]
    if rows:
        keys = [k for k in rows[0] if k != "class"]
        lines += [
            "",
            "Per class (the weakest first):",
            "",
            "| class | " + " | ".join(keys) + " |",
            "|---" * (len(keys) + 1) + "|",
        ]
        lines += [
            f"| {r['class']} | "
            + " | ".join(f"{r[k]:.3g}" if isinstance(r[k], float) else str(r[k]) for k in keys)
            + " |"
            for r in rows
        ]
    pairs = report.get("confused_pairs") or []
    if pairs:
        lines += [
            "",
            "Most confused: " + ", ".join(f"{p['true']} as {p['predicted']} ({p['count']})" for p in pairs[:5]),
        ]
    lines += [""] + [f"![{name}](../evaluation/{file})" for name, file in (report.get("figures") or {}).items()]
    return [*lines, ""]
