"""The rules diagnose applies to a run's evidence. Each looks for one problem and, when it sees it, returns a
Finding: the numbers it saw and where (epochs, steps), the likely cause, and the fix (fixes.py writes it as an
override file). The thresholds are module constants, each with where it comes from.

A rule that lacks what it reads (no health files: HealthMonitor was not in the run's callbacks) stays silent;
diagnose says which rules could not look.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from proj.extras.diagnose import fixes
from proj.extras.diagnose.evidence import Evidence, median, quarter
from proj.extras.diagnose.readings import clipping, growth_line, jumps, listed, loss_trend, statistics_mean, trend

HEALTHY_UPDATE = 1e-3  # update / weight per step: Karpathy's rule of thumb, about 1e-3
TOO_HIGH_UPDATE = 1e-1  # 100x that: every step rewrites a tenth of each weight
TOO_LOW_UPDATE = 1e-4  # 10x below it, even at the run's largest: the weights barely move
VANISHING_RATIO = 1e-3  # first / last block gradient norm (AUTOTRAINER, ICSE'21)
EXPLODING_RATIO = 70.0  # first / last block gradient norm (AUTOTRAINER)
GROWTH = 100.0  # the largest gradient norm against the median of the run's first quarter
DEAD = 0.7  # a block with this share of units constant over the batch (AUTOTRAINER: 70% zero gradients)
UNDERFIT_METRIC = 0.85  # the training metric (accuracy, macro F1, R^2) below this at the end of the run
GAP = 0.05  # train - validation metric: a gap this wide is more than noise on a small validation split
FLOOR = 0.05  # the lr under 5% of its peak is "near its floor"
MIN_EPOCHS = 3  # epoch-curve rules need a few epochs to see a trend


@dataclass
class Finding:
    rule: str
    title: str
    evidence: list[str]
    cause: str
    fix: str
    override: dict[str, Any] | None = None
    figure: str = "curves.png"
    numbers: dict[str, float] = field(default_factory=dict)


def lr_too_high(ev: Evidence) -> Finding | None:
    losses, spikes = ev.column("loss", "steps"), sum(ev.column("spikes", "steps"))
    nonfinite = sum(ev.column("nonfinite", "steps")) + (1 if "NonFinite" in str(ev.summary.get("failed")) else 0)
    updates = median([median(v) for v in ev.blocks("update").values()])
    bounced = jumps(ev.column("val/loss"))
    unstable = []
    if nonfinite:
        unstable.append(
            f"{nonfinite:.0f} non-finite training loss(es)" + (", the run failed" if ev.summary.get("failed") else "")
        )
    if len(losses) >= 4 and median(quarter(losses, "last")) > median(quarter(losses, "first")):
        unstable.append(
            f"the training loss rose: {median(quarter(losses, 'first')):.3g} -> {median(quarter(losses, 'last')):.3g}"
        )
    if spikes:
        unstable.append(f"{spikes:.0f} loss spike(s) (a step's loss over 2x the median of the 50 before it)")
    if bounced:
        unstable.append(f"the validation loss jumped and fell back at epoch(s) {', '.join(map(str, bounced))}")
    large = updates > TOO_HIGH_UPDATE / 3
    rose = any(line.startswith("the training loss rose") for line in unstable)
    if not (updates > TOO_HIGH_UPDATE or nonfinite or rose or (large and unstable)):
        return None  # large updates alone can be fine (a normalised net), and so can spikes with small updates
    seen = [*unstable, f"median update / weight ratio {updates:.2g} per step (healthy: about {HEALTHY_UPDATE:g})"]
    return Finding(
        "lr_too_high", "The learning rate is too high", seen,
        "Steps overshoot: each update changes the weights by a large share, the loss jumps or diverges.",
        "Divide the learning rate by 10 (every stage).",
        fixes.scale_lr(ev.config, 0.1), "updates.png", {"update_ratio": updates},
    )  # fmt: skip


def lr_too_low(ev: Evidence) -> Finding | None:
    per_record = [median(list(r)) for r in zip(*ev.blocks("update").values(), strict=False)]
    if len(per_record) < 3 or not max(per_record) < TOO_LOW_UPDATE:  # small even at the run's largest
        return None
    largest = max(per_record)
    factor = 100.0 if largest < TOO_LOW_UPDATE / 10 else 10.0
    return Finding(
        "lr_too_low", "The learning rate is too low",
        [f"update / weight ratio at most {largest:.2g} per step over {len(per_record)} records "
         f"(healthy: about {HEALTHY_UPDATE:g})", loss_trend(ev)],
        "The weights barely move: the loss falls slowly and steadily, and would need many more epochs.",
        f"Multiply the learning rate by {factor:g} (every stage).",
        fixes.scale_lr(ev.config, factor), "updates.png", {"update_ratio": largest},
    )  # fmt: skip


def lr_decayed_early(ev: Evidence) -> Finding | None:
    lrs, epochs, losses = ev.column("lr", "steps"), ev.column("epoch", "steps"), ev.column("train/loss_epoch")
    if len(lrs) < 4 or len(epochs) != len(lrs) or len(losses) < MIN_EPOCHS or max(lrs) <= 0:
        return None
    peak = lrs.index(max(lrs))
    floor = next((i for i in range(peak, len(lrs)) if lrs[i] <= FLOOR * lrs[peak]), None)
    if floor is None or floor > 0.6 * len(lrs):  # at the floor only at the end: a schedule that ends as planned
        return None
    start = min(int(epochs[floor]), len(losses) - 1)
    gain = (losses[start] - losses[-1]) / max(abs(losses[start]), 1e-12)
    metric = ev.column(f"train/{ev.metric}")
    if gain > 0.1 or (metric and metric[-1] >= UNDERFIT_METRIC + 0.1):
        return None
    return Finding(
        "lr_decayed_early", "The learning rate decayed too early",
        [f"the lr fell under {FLOOR:.0%} of its peak {lrs[peak]:.2g} by step {ev.steps[floor]['step']:.0f} "
         f"(epoch {start}), {floor / len(lrs):.0%} of the way through the run",
         f"training loss from then on: {losses[start]:.3g} -> {losses[-1]:.3g} ({-gain:+.1%}): a plateau"],
        "The schedule's horizon is shorter than the run: the rest of the run trains at a learning rate too small "
        "to make progress.",
        "A cosine decay over the whole run (T_max 0: the run's length), with a warm-up.",
        fixes.whole_run_cosine(ev.config), "curves.png", {"floor_step": ev.steps[floor]["step"]},
    )  # fmt: skip


def gradients(ev: Evidence) -> Finding | None:
    """Vanishing or exploding: the first block's gradient against the last's, and the norm's growth."""
    grads = {k: v for k, v in ev.blocks("grad").items() if v}
    if len(grads) < 2:
        return None
    names = list(grads)
    ratio = median([f / max(last, 1e-30) for f, last in zip(grads[names[0]], grads[names[-1]], strict=False)])
    norms = ev.column("grad_norm", "steps")
    growth = max(norms) / max(median(quarter(norms, "first")), 1e-30) if len(norms) >= 4 else 1.0
    where = f"{names[0]} / {names[-1]}"
    if ratio < VANISHING_RATIO:
        return Finding(
            "vanishing_gradients", "Vanishing gradients",
            [f"gradient norm {where}: median {ratio:.2g} (vanishing under {VANISHING_RATIO:g})",
             f"median gradient norm: {names[0]} {median(grads[names[0]]):.2g}, {names[-1]} "
             f"{median(grads[names[-1]]):.2g}"],
            "The first blocks hardly learn: each saturating layer (sigmoid, tanh) shrinks the gradient on its way "
            "back.",
            "BatchNorm and ReLU in the net (or residual connections).",
            fixes.normalised_net(ev.config, "relu"), "gradients.png", {"first_last_ratio": ratio},
        )  # fmt: skip
    if ratio > EXPLODING_RATIO or growth > GROWTH:
        return Finding(
            "exploding_gradients", "Exploding gradients",
            [f"gradient norm {where}: median {ratio:.2g} (exploding over {EXPLODING_RATIO:g})", growth_line(ev, growth),
             *clipping(ev)],
            "Gradients grow on their way back through the layers, or from step to step, until the updates blow up.",
            "Clip the gradient norm at 1.0 and put BatchNorm in the net.",
            fixes.clipped_and_normalised(ev.config), "gradients.png", {"first_last_ratio": ratio, "growth": growth},
        )  # fmt: skip
    return None


def dead_units(ev: Evidence) -> Finding | None:
    dead = {name: median(quarter(values, "last")) for name, values in ev.blocks("dead").items() if values}
    worst = {name: share for name, share in dead.items() if share >= DEAD}
    if not worst:
        return None
    shown = listed(worst)
    return Finding(
        "dead_units", "Dead units",
        [f"units whose output is the same for every sample (last quarter of the run): {shown}"],
        "ReLUs pushed below zero for every input (often by too large a step) never fire again and get no gradient.",
        "Leaky ReLU and BatchNorm in the net, and a learning rate 10x smaller.",
        fixes.normalised_net(ev.config, "leaky_relu", lr_factor=0.1), "activations.png", {"dead": max(worst.values())},
    )  # fmt: skip


def fitting(ev: Evidence) -> Finding | None:
    """Underfitting (the training metric low, no gap) or overfitting (the gap widens, the best epoch early)."""
    train, val = ev.column(f"train/{ev.metric}"), ev.column(f"val/{ev.metric}")
    val_loss = ev.column("val/loss")
    if len(train) < MIN_EPOCHS or len(val) != len(train) or len(val_loss) != len(train):
        return None
    best = val_loss.index(min(val_loss))
    gap_best, gap_end = train[best] - val[best], train[-1] - val[-1]
    late_train, late_val = statistics_mean(train[-3:]), statistics_mean(val[-3:])  # the training metric is sampled
    allows = ev.baseline.get("train")  # what a linear model reaches on the same training split
    below = allows is None or late_train < allows - 2 * GAP
    if late_train < UNDERFIT_METRIC and late_train - late_val < 3 * GAP and below:
        return Finding(
            "underfitting", "Underfitting",
            [f"training {ev.metric} {late_train:.3f} over the last 3 epochs (of {len(train)}), validation "
             f"{late_val:.3f}: the model does not fit the training data", loss_trend(ev), *baseline_line(ev)],
            "The model cannot fit even the training data: too little capacity, too much regularisation, or too few "
            "epochs.",
            "A net 4x as wide, with less dropout.",
            fixes.bigger_net(ev.config), "curves.png", {"train_metric": late_train},
        )  # fmt: skip
    rose = val_loss[-1] > 1.1 * val_loss[best]
    if best < 0.6 * (len(val_loss) - 1) and rose and gap_end > max(GAP, gap_best + 0.02):
        return Finding(
            "overfitting", "Overfitting",
            [f"best validation loss {val_loss[best]:.3g} at epoch {best} of {len(val_loss)}, then {val_loss[-1]:.3g}",
             f"train - validation {ev.metric}: {gap_best:+.3f} at epoch {best}, {gap_end:+.3f} at the end"],
            "The model learns the training samples rather than the task: too little data for its capacity, or too "
            "little regularisation.",
            "More regularisation: dropout 0.5, weight decay 5x (at least 0.05), and augmentation for images.",
            fixes.regularise(ev.config, ev.images), "curves.png", {"gap": gap_end, "best_epoch": best},
        )  # fmt: skip
    return None


def baseline_line(ev: Evidence) -> list[str]:
    if not ev.baseline:
        return []
    reached = f"{ev.baseline['train']:.3f}"
    return [f"{ev.baseline['model']} on the same training split reaches training {ev.metric} {reached}"]


def stopped_improving(ev: Evidence) -> Finding | None:
    stopping = ev.summary.get("early_stopping") or {}
    monitored = ev.column(stopping.get("monitor") or "val/loss")
    if not stopping.get("stopped") or len(monitored) < MIN_EPOCHS + 1:
        return None
    sign = -1.0 if stopping.get("mode") == "min" else 1.0
    recent = monitored[-max(5, int(stopping.get("patience") or 1) + 1) :]  # since about the best epoch
    slope = sign * trend(recent) / max(abs(statistics_mean(recent)), 1e-12)
    if slope <= 0.005:  # improving by less than 0.5% an epoch: stopping there was right
        return None
    return Finding(
        "stopped_while_improving", "Early stopping fired while the run was still improving",
        [f"stopped at epoch {stopping.get('stopped_epoch')} with patience {stopping.get('patience')}",
         f"{stopping.get('monitor')} over its last {len(recent)} epochs still improved {slope:.1%} an epoch (trend)"],
        "Patience shorter than the noise of the validation metric: one bad epoch ended a run that was improving.",
        "Three times the patience (at least 5).",
        fixes.patience(ev.config, 3), "curves.png", {"slope": slope},
    )  # fmt: skip


def imbalance(ev: Evidence) -> Finding | None:
    rows = ev.evaluation.get("per_class") or []
    data = (ev.config.get("data") or {}).get("init_args") or {}
    corrected = data.get("sampler", "none") != "none" or data.get("class_weights", "none") != "none"
    if not rows or not ev.train_shares or corrected:  # resampled or weighted already: its own recipe, not this fix
        return None
    even = 1 / len(ev.train_shares)
    recall = {str(r["class"]): r["recall"] for r in rows}
    rare = [c for c, share in ev.train_shares.items() if share < 0.5 * even and c in recall]
    common = [c for c, share in ev.train_shares.items() if share >= 0.5 * even and c in recall]
    if not rare or not common:
        return None
    gap = statistics_mean([recall[c] for c in common]) - statistics_mean([recall[c] for c in rare])
    if gap < 0.1:
        return None
    shown = ", ".join(f"{c} ({ev.train_shares[c]:.1%} of training, recall {recall[c]:.2f})" for c in rare[:6])
    return Finding(
        "class_imbalance", "Class imbalance hurts the rare classes",
        [f"rare classes: {shown}", f"mean test recall: common classes {gap:+.2f} above the rare ones"],
        "The loss is dominated by the common classes: the model learns to say them.",
        "A class-balanced sampler (or data.class_weights: balanced).",
        fixes.balanced(ev.config), "curves.png", {"recall_gap": gap},
    )  # fmt: skip


def leakage(ev: Evidence) -> Finding | None:
    if not ev.duplicates or ev.duplicates[0] == 0:
        return None
    found, compared = ev.duplicates
    return Finding(
        "train_test_duplicates",
        "Test samples also in the training split",
        [f"{found} of {compared} test inputs ({found / compared:.1%}) are byte-for-byte in the training split"],
        "Duplicates in the data land on both sides of the split: the test score measures memory, not generalisation.",
        "Remove duplicates before splitting (the fix is in the data: no override).",
    )


RULES: tuple[Callable[[Evidence], Finding | None], ...] = (
    lr_too_high, gradients, lr_too_low, lr_decayed_early, dead_units, fitting, stopped_improving, imbalance, leakage,
)  # fmt: skip
# A finding that another one explains is folded into it: a too-low or too-high lr, or vanishing gradients, leave the
# model underfitted; saturated sigmoids look like dead units, and vanishing gradients like a too-low lr.
DYNAMICS = {"lr_too_high", "lr_too_low", "lr_decayed_early", "vanishing_gradients", "exploding_gradients", "dead_units"}
EXPLAINED_BY = {
    "underfitting": DYNAMICS,
    "dead_units": {"vanishing_gradients", "exploding_gradients"},
    "lr_too_low": {"vanishing_gradients"},
}


def find(ev: Evidence) -> list[Finding]:
    """Every rule's finding, those another explains folded into it as one line of evidence."""
    found = [finding for rule in RULES if (finding := rule(ev)) is not None]
    kept = []
    for finding in found:
        root = next((f for f in found if f.rule in EXPLAINED_BY.get(finding.rule, ())), None)
        if root is None:
            kept.append(finding)
        else:
            root.evidence.append(f"also seen, a consequence of it: {finding.title.lower()} ({finding.evidence[0]})")
    return kept
