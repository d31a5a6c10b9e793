"""The figures Evaluation writes beside its JSON: ROC and precision-recall curves (classification, multi-label), the
predicted-vs-true scatter (regression), and a gallery of the highest-loss samples (images, sequences).

Each function draws one PNG into `folder` and returns {name: file name}, or {} where the figure does not apply.
matplotlib is imported inside each function (a heavy import the run's start-up should not pay), through its Figure
class and the Agg canvas, without pyplot: no global backend is set, so a notebook's stays as it was.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

MAX_CURVES = 10  # beyond that a legend is unreadable: the classes with the lowest AUC are drawn
EXACT_CURVES_UP_TO = 20_000  # samples; past it the curves are binned (200 thresholds) to bound their memory


def new_figure(width: float, height: float, layout: str | None = "constrained") -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout=layout)
    FigureCanvasAgg(figure)  # Agg renders the PNG whatever backend the process has
    return figure


def save(figure: Any, folder: Path, name: str) -> str:
    figure.savefig(folder / name, dpi=80)  # (dpi 100 drew a third more pixels, at every test of every run)
    return name


def one_vs_rest_curves(task: str, probs: np.ndarray, target: np.ndarray) -> dict[str, Any]:
    """Per class (per label) ROC and precision-recall curves from torchmetrics; a class without positive or without
    negative samples has no curve and is left out."""
    from torchmetrics.functional.classification import (
        multiclass_precision_recall_curve,
        multiclass_roc,
        multilabel_precision_recall_curve,
        multilabel_roc,
    )

    p, t, n = torch.as_tensor(probs).float(), torch.as_tensor(target).long(), probs.shape[1]
    thresholds = None if len(t) <= EXACT_CURVES_UP_TO else 200
    if task == "multilabel":
        positives = t.numpy().astype(bool)
        roc, pr = multilabel_roc(p, t, n, thresholds), multilabel_precision_recall_curve(p, t, n, thresholds)
    else:
        positives = t.numpy()[:, None] == np.arange(n)
        roc, pr = multiclass_roc(p, t, n, thresholds), multiclass_precision_recall_curve(p, t, n, thresholds)
    drawable = [c for c in range(n) if 0 < positives[:, c].sum() < len(t)]
    return {"roc": roc, "pr": pr, "positives": positives, "classes": drawable}


def macro_roc(fpr: list[np.ndarray], tpr: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The classes' ROC curves averaged at every false positive rate any of them has, as scikit-learn's ROC example
    does it (torchmetrics' average="macro" gives the same curve, but took 0.4 s for 10 classes of 360 samples)."""
    grid = np.unique(np.concatenate(fpr))
    return grid, np.mean([np.interp(grid, x, y) for x, y in zip(fpr, tpr, strict=True)], axis=0)


def curve_figures(task: str, probs: np.ndarray, target: np.ndarray, names: list[str], folder: Path, split: str) -> dict:
    """<split>_roc.png and <split>_precision_recall.png, one-vs-rest, each curve labelled with its area (ROC-AUC;
    average precision); past MAX_CURVES classes, the ones with the lowest ROC-AUC."""
    from sklearn.metrics import auc, average_precision_score

    curves = one_vs_rest_curves(task, probs, target)
    (fpr, tpr, _), (precision, recall, _), classes = curves["roc"], curves["pr"], curves["classes"]
    if not classes:
        return {}
    roc_auc = {c: auc(fpr[c].numpy(), tpr[c].numpy()) for c in classes}
    shown = sorted(classes, key=lambda c: roc_auc[c])[:MAX_CURVES] if len(classes) > MAX_CURVES else classes
    note = f" ({len(shown)} lowest-AUC of {len(classes)})" if len(shown) < len(classes) else ""
    figure, ax = new_axes(f"{split}: ROC, one-vs-rest{note}", "false positive rate", "true positive rate")
    for c in shown:
        ax.plot(fpr[c].numpy(), tpr[c].numpy(), linewidth=1, label=f"{names[c]} ({roc_auc[c]:.3f})")
    if task == "classification":  # a label's curves are independent problems: no average of them is drawn
        x, y = macro_roc([fpr[c].numpy() for c in classes], [tpr[c].numpy() for c in classes])
        ax.plot(x, y, color="black", linewidth=2, label=f"macro ({auc(x, y):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.6, linestyle="--")
    ax.legend(fontsize=7, title="class (ROC-AUC)", title_fontsize=7, loc="lower right")
    drawn = {"roc": save(figure, folder, f"{split}_roc.png")}
    ap = {c: average_precision_score(curves["positives"][:, c], probs[:, c]) for c in shown}
    figure, ax = new_axes(f"{split}: precision-recall{note}", "recall", "precision")
    for c in shown:
        ax.plot(recall[c].numpy(), precision[c].numpy(), linewidth=1, label=f"{names[c]} ({ap[c]:.3f})")
    ax.legend(fontsize=7, title="class (average precision)", title_fontsize=7, loc="lower left")
    return {**drawn, "precision_recall": save(figure, folder, f"{split}_precision_recall.png")}


def new_axes(title: str, xlabel: str, ylabel: str) -> tuple[Any, Any]:
    figure = new_figure(5.5, 4.5, layout=None)  # fixed margins: a layout engine doubles the drawing time
    ax = figure.add_axes((0.12, 0.11, 0.84, 0.81))
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel, xlim=(0, 1), ylim=(0, 1.02))
    return figure, ax


def scatter_figure(preds: np.ndarray, target: np.ndarray, names: list[str], folder: Path, split: str) -> dict:
    """<split>_predicted_vs_true.png: one panel per target (the first four), the diagonal for exact predictions."""
    preds, target = preds.reshape(len(preds), -1), target.reshape(len(target), -1)
    shown = min(4, preds.shape[1])
    figure = new_figure(4.2 * shown, 4.2)
    for j, ax in enumerate(np.atleast_1d(figure.subplots(1, shown))):
        ax.scatter(target[:, j], preds[:, j], s=8, alpha=0.6)
        low, high = float(min(target[:, j].min(), preds[:, j].min())), float(max(target[:, j].max(), preds[:, j].max()))
        ax.plot([low, high], [low, high], color="grey", linewidth=0.8)
        ax.set(xlabel=f"true {names[j]}", ylabel=f"predicted {names[j]}", title=f"{split}: predicted vs true")
    return {"predicted_vs_true": save(figure, folder, f"{split}_predicted_vs_true.png")}


def gallery_figure(kind: str, samples: list[torch.Tensor], titles: list[str], folder: Path, split: str) -> dict:
    """<split>_highest_loss.png: images (C, H, W) as pictures, sequences (steps, features) as lines over their real
    steps, each titled with its true and predicted label and its loss. Texts and tables get none (the JSON lists
    them)."""
    if kind not in ("image", "sequence") or not samples:
        return {}
    cols = min(4, len(samples))
    rows = math.ceil(len(samples) / cols)
    if kind == "image":  # one picture of all of them on one axes: 16 axes took a second to draw
        return {"highest_loss": image_mosaic(samples, titles, cols, rows, folder, split)}
    figure = new_figure(2.2 * cols, 2.4 * rows, layout=None)
    figure.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=1 - 0.5 / rows, hspace=0.6, wspace=0.1)
    axes = np.atleast_1d(figure.subplots(rows, cols)).ravel()
    for ax, sample, title in zip(axes, samples, titles, strict=False):
        ax.plot(sample.float().numpy(), linewidth=0.7)  # one line per feature, over the sequence's real steps only
        ax.set(xticks=[], yticks=[], xlim=(0, max(len(sample) - 1, 1)))
        ax.set_title(title, fontsize=7)
    for ax in axes[len(samples) :]:
        ax.axis("off")
    figure.suptitle(f"{split}: the highest-loss samples", fontsize=9)
    return {"highest_loss": save(figure, folder, f"{split}_highest_loss.png")}


def image_mosaic(samples: list[torch.Tensor], titles: list[str], cols: int, rows: int, folder: Path, split: str) -> str:
    """The images tiled into one array, each under a band holding its title."""
    tiles = [displayable(sample) for sample in samples]
    h, w = tiles[0].shape[:2]
    band, gap = h, max(1, w // 8)  # a band as tall as an image for the three lines of its title
    canvas = np.ones((rows * (band + h + gap), cols * (w + gap), *tiles[0].shape[2:]))
    width = 2.2 * cols
    figure = new_figure(width, width * canvas.shape[0] / canvas.shape[1] + 0.4, layout=None)
    ax = figure.add_axes((0.01, 0.01, 0.98, 0.9))
    for i, (tile, title) in enumerate(zip(tiles, titles, strict=False)):
        top, left = (i // cols) * (band + h + gap) + band, (i % cols) * (w + gap)
        if tile.shape[:2] == (h, w):
            canvas[top : top + h, left : left + w] = tile
        ax.text(left, top - 0.5, title, fontsize=7, va="bottom", ha="left")
    ax.imshow(canvas, cmap="gray" if canvas.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")
    figure.suptitle(f"{split}: the highest-loss samples", fontsize=9)
    return save(figure, folder, f"{split}_highest_loss.png")


def displayable(image: torch.Tensor) -> np.ndarray:
    """(C, H, W) as imshow takes it, each image min-max scaled to [0, 1]: the inputs come standardised."""
    x = image.float()
    x = (x - x.min()) / (x.max() - x.min()).clamp_min(1e-8)
    return x[0].numpy() if x.shape[0] == 1 else x[:3].permute(1, 2, 0).numpy()
