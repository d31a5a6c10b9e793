"""TestTimeAugmentation: at test and predict, the model's output for a batch is the average over deterministic views
of it (the batch itself, 1-pixel shifts, a left-right flip), so the test metrics and predictions.csv are those of
the averaged outputs. Validation is left alone: checkpoint choice and early stopping are as without it.

It works through two torch hooks on the task module, held only while a test or a predict runs: one stacks the views
into one batch before forward, the other averages their outputs after it. The module's code is unchanged, and so is
everything an export or the server deploys: neither includes TTA.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import lightning.pytorch as L
from lightning.pytorch.callbacks import Callback
from torch import Tensor
from torch.utils.hooks import RemovableHandle

from proj.extras.tta.views import VIEWS, averaged_outputs, stacked_views

PRESET = "configs/callbacks/tta.yaml"
DEFAULT_VIEWS = ("identity", "shift_up", "shift_down", "shift_left", "shift_right")
# What "probabilities" averages for each task that has them; "auto" takes these, and the plain mean for the others.
PROBABILITIES = {"classification": "softmax", "multilabel": "sigmoid"}


class TestTimeAugmentation(Callback):
    """The average of the model's outputs over `views` of each test and predict batch (configs/callbacks/tta.yaml).

    views: names from identity, shift_up, shift_down, shift_left, shift_right (the image moved `pixels` pixels that
        way, the edge repeated into the gap) and hflip (left-right: only for data whose labels a mirror keeps).
    average: auto (default): the probabilities for classification and multi-label models, the outputs themselves
        for the others (a regressor's values); probabilities; outputs (for a classifier: its logits, as timm does).
    Images only, (N, C, H, W) batches: other data is refused before anything runs.
    """

    __test__ = False  # a callback, not a pytest class

    def __init__(
        self,
        views: Sequence[str] = DEFAULT_VIEWS,
        pixels: int = 1,
        average: Literal["auto", "probabilities", "outputs"] = "auto",
    ) -> None:
        check_views(views, pixels, average)
        self.views, self.pixels, self.average = list(views), pixels, average
        self.mode = "outputs"  # softmax, sigmoid or outputs: set from the model in setup
        self.handles: list[RemovableHandle] = []

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # At every stage, fit too: a run whose test after fit cannot use TTA stops before it trains.
        refuse_non_images(pl_module, self.pixels)
        self.mode = averaging_mode(self.average, getattr(pl_module, "task", "custom"))

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.attach(pl_module)

    on_predict_start = on_test_start

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.detach()

    on_predict_end = on_test_end

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.detach()  # also after an error inside the test

    def attach(self, pl_module: L.LightningModule) -> None:
        if self.views == ["identity"]:
            return  # the model's own outputs, untouched
        self.detach()
        self.handles = [
            pl_module.register_forward_pre_hook(self.stack_views),
            pl_module.register_forward_hook(self.average_views),
        ]

    def detach(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def stack_views(self, module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        x = args[0]
        if not isinstance(x, Tensor) or x.ndim != 4:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"TestTimeAugmentation: the model's inputs are {shape}, not a batch of images (N, C, H, W): leave out "
                f"{PRESET} for this data"
            )
        return (stacked_views(x, self.views, self.pixels), *args[1:])

    def average_views(self, module: Any, args: tuple[Any, ...], outputs: Tensor) -> Tensor:
        return averaged_outputs(outputs, len(self.views), self.mode)


def check_views(views: Sequence[str], pixels: int, average: str) -> None:
    unknown = [v for v in views if v not in VIEWS]
    if unknown or not views or len(set(views)) != len(views):
        raise ValueError(
            f"TestTimeAugmentation: views={list(views)}: give each of them at most once, at least one, from "
            f"{', '.join(VIEWS)}"
        )
    if isinstance(pixels, bool) or not isinstance(pixels, int) or pixels < 1:
        raise ValueError(f"TestTimeAugmentation: pixels={pixels!r} must be a whole number of pixels, at least 1")
    if average not in ("auto", "probabilities", "outputs"):
        raise ValueError(f"TestTimeAugmentation: average={average!r}: choose auto, probabilities or outputs")


def refuse_non_images(pl_module: L.LightningModule, pixels: int) -> None:
    """Shifts and flips are image operations: a table's row, a sequence or a text has no pixels to move."""
    shape = tuple(getattr(pl_module, "hparams", {}).get("input_shape") or ())
    if len(shape) != 3:
        raise ValueError(
            f"TestTimeAugmentation shifts and flips images (C, H, W), but the data's input_shape is {shape} (a table, "
            f"sequences or text): leave out {PRESET} (its trainer.callbacks entry) for this data"
        )
    if pixels >= min(shape[1:]):
        raise ValueError(
            f"TestTimeAugmentation: pixels={pixels} would shift the {shape[1]} x {shape[2]} images out of view: give "
            "fewer pixels"
        )


def averaging_mode(average: str, task: str) -> str:
    """softmax or sigmoid (the mean of the probabilities) or outputs (their plain mean), for the model's task."""
    if average == "outputs" or (average == "auto" and task not in PROBABILITIES):
        return "outputs"
    if task not in PROBABILITIES:
        raise ValueError(
            f"TestTimeAugmentation: average=probabilities needs a classification or multilabel model, and this one's "
            f"task is {task}: use average: outputs (or auto)"
        )
    return PROBABILITIES[task]
