"""ConfusionMatrix: a figure of the validation confusion matrix every few epochs and at the end of fit.

Classification and multi-label (one 2 x 2 matrix per label, at the model's thresholds, side by side): in the
default config for every task, it does nothing, silently, for other tasks, so a regression experiment does not
have to rewrite the callback list.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning.pytorch as L
import numpy as np
from lightning.pytorch.callbacks import Callback
from torchmetrics.classification import MulticlassConfusionMatrix, MultilabelConfusionMatrix

from proj.extras.tensorboard_views.logger_output import log_image


class ConfusionMatrix(Callback):
    """Rows: true class; columns: predicted class; each row normalised to sum to 1.

    The matrix is computed after every validation epoch (cheap) but drawn every `every_n_epochs` epochs and
    once more, for the last epoch, at the end of fit: drawing it and writing its PNG cost more than computing it.
    """

    def __init__(self, every_n_epochs: int = 10) -> None:
        self.every_n_epochs = every_n_epochs
        self.matrix: MulticlassConfusionMatrix | MultilabelConfusionMatrix | None = None
        self.undrawn: tuple[np.ndarray, int, int] | None = None  # (matrix, epoch, step) not drawn yet
        self.active = True

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.task = getattr(pl_module, "task", None)
        self.active = self.task in ("classification", "multilabel")  # else silent: the view does not apply

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.active:
            return
        if self.matrix is None:  # no per-batch argument checks: on a GPU each would wait for the device
            kind = MultilabelConfusionMatrix if self.task == "multilabel" else MulticlassConfusionMatrix
            self.matrix = kind(pl_module.num_outputs, normalize="true", validate_args=False)
        self.matrix = self.matrix.to(pl_module.device)
        self.matrix.reset()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self.active and isinstance(outputs, dict) and "probs" in outputs:
            self.matrix.update(outputs.get("decided", outputs["probs"]), outputs["target"])

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self.active:
            return
        matrix = self.matrix.compute().cpu().numpy()  # on every rank: under DDP this gathers from all of them
        self.undrawn = (matrix, trainer.current_epoch, trainer.global_step)
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0:  # epochs 9, 19, ... counted from 0
            self.draw(trainer)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.draw(trainer)

    def draw(self, trainer: L.Trainer) -> None:
        if self.undrawn is None or not trainer.is_global_zero:  # already drawn, other ranks
            return
        (matrix, epoch, step), self.undrawn = self.undrawn, None
        names = getattr(trainer.lightning_module, "class_names", None) or range(len(matrix))
        title = f"validation, epoch {epoch}"
        if matrix.ndim == 3:  # multi-label: (labels, 2, 2)
            image = side_by_side(
                [confusion_image(m, ("no", "yes"), f"{name}, {title}") for m, name in zip(matrix, names, strict=False)]
            )
        else:
            image = confusion_image(matrix, names, title)
        log_image(trainer, "val/confusion_matrix", image, step)


def side_by_side(images: list[np.ndarray]) -> np.ndarray:
    """RGB images in a row on a white ground, top-aligned."""
    height = max(image.shape[0] for image in images)
    padded = [np.pad(im, ((0, height - im.shape[0]), (0, 8), (0, 0)), constant_values=255) for im in images]
    return np.concatenate(padded, 1)


def confusion_image(matrix: np.ndarray, class_names: Sequence[Any], title: str) -> np.ndarray:
    """The matrix as an (H, W, 3) uint8 image: cells coloured by matplotlib's "Blues" map, every class name on both
    axes (readable to 100 classes: 16 pixels a class, each name in its cell's height), the fractions in the cells
    up to 20 classes, and a colour bar.

    Drawn with PIL rather than a matplotlib Figure, whose set-up and text layout cost a default digits fit a
    noticeable share of its time (benchmarks/overhead.py measures the template's fit against plain Lightning's)."""
    from matplotlib import colormaps
    from PIL import Image, ImageDraw, ImageFont

    n, names, blues = len(matrix), [str(c) for c in class_names], colormaps["Blues"]
    cell, font = (40, ImageFont.load_default(13)) if n <= 20 else (16, ImageFont.load_default(10))
    small = ImageFont.load_default(12)
    longest = max((int(font.getlength(name)) for name in names), default=8)
    left, top, side = longest + 34, 34, cell * n  # room for the names and the axis label; the title
    image = Image.new("RGB", (left + side + 90, top + side + longest + 36), "white")
    image.paste(Image.fromarray(rgb(blues, np.clip(matrix, 0, 1)).repeat(cell, 0).repeat(cell, 1)), (left, top))
    draw = ImageDraw.Draw(image)
    draw.rectangle((left - 1, top - 1, left + side, top + side), outline="black")
    draw.text((left + side / 2, 8), title, "black", small, anchor="mt")
    draw.text((left + side / 2, image.height - 8), "predicted", "black", small, anchor="mb")
    image.paste(rotated("true", small, side, 18), (4, top))
    names_below = Image.new("RGB", (longest + 8, side), "white")  # drawn level, then turned to read upwards
    for i, name in enumerate(names):
        middle = i * cell + cell / 2
        draw.text((left - 6, top + middle), name, "black", font, anchor="rm")
        ImageDraw.Draw(names_below).text((longest + 2, middle), name, "black", font, anchor="rm")
    image.paste(names_below.rotate(90, expand=True), (left, top + side + 4))
    if n <= 20:  # the fractions, while they stay readable
        for (i, j), v in np.ndenumerate(matrix):
            if v >= 0.01:
                centre = (left + j * cell + cell / 2, top + i * cell + cell / 2)
                draw.text(centre, f"{v:.2f}", "white" if v > 0.5 else "black", small, anchor="mm")
    colour_bar(image, draw, blues, left + side + 20, top, side, small)
    return np.asarray(image)


def rgb(cmap: Any, values: np.ndarray) -> np.ndarray:
    """The colour map's colours of `values` in [0, 1], as uint8 RGB (one more axis of 3)."""
    return (cmap(values)[..., :3] * 255).astype(np.uint8)


def rotated(text: str, font: Any, length: int, height: int) -> Any:
    """`text` centred on a strip `length` long, turned to read upwards (an axis label on the left)."""
    from PIL import Image, ImageDraw

    strip = Image.new("RGB", (length, height), "white")
    ImageDraw.Draw(strip).text((length / 2, height / 2), text, "black", font, anchor="mm")
    return strip.rotate(90, expand=True)


def colour_bar(image: Any, draw: Any, cmap: Any, x: int, top: int, side: int, font: Any) -> None:
    """A vertical bar of the colour map from 0 (bottom) to 1 (top), ticked at 0, 0.5 and 1, beside the matrix."""
    from PIL import Image

    height = int(0.8 * side)
    y = top + (side - height) // 2
    image.paste(Image.fromarray(rgb(cmap, np.linspace(1, 0, height))[:, None].repeat(14, 1)), (x, y))
    draw.rectangle((x - 1, y - 1, x + 14, y + height), outline="black")
    for v in (0, 0.5, 1):
        tick = y + (1 - v) * (height - 1)
        draw.line((x + 14, tick, x + 18, tick), "black")
        draw.text((x + 21, tick), f"{v:g}", "black", font, anchor="lm")
    image.paste(rotated("fraction of the true class", font, height, 16), (x + 44, y))
