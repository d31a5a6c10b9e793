"""Test-time augmentation (configs/callbacks/tta.yaml) on the default config: the test metrics and predictions.csv are
those of the mean over shifted views, computed here by hand; validation, and so the checkpoints, are not touched."""

import copy
import csv
import os

import lightning.pytorch as L
import pytest
import torch

from proj.extras.tta import TestTimeAugmentation
from proj.extras.tta.views import averaged_outputs, stacked_views
from proj.models.deployable import deployable

from conftest import CONFIGS, DEFAULT, QUICK, cli, usage_error

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("tta")]

TTA = str(CONFIGS / "callbacks" / "tta.yaml")


# The preset's views, shifted by hand on the raw images (the edge row or column repeated): (N, C, H, W).
BY_HAND = {
    "identity": lambda x: x,
    "shift_up": lambda x: torch.cat([x[..., 1:, :], x[..., -1:, :]], dim=-2),
    "shift_down": lambda x: torch.cat([x[..., :1, :], x[..., :-1, :]], dim=-2),
    "shift_left": lambda x: torch.cat([x[..., 1:], x[..., -1:]], dim=-1),
    "shift_right": lambda x: torch.cat([x[..., :1], x[..., :-1]], dim=-1),
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One short fit with tta.yaml, tested after fit (its best checkpoint), then predict on that checkpoint. A recipe
    without warmup (the default's 50 warmup steps would leave 3 steps' weights near their start: views alike)."""
    workdir, cwd = tmp_path_factory.mktemp("tta"), os.getcwd()
    recipe = ["--config", str(CONFIGS / "optim" / "adam_exponential.yaml")]
    os.chdir(workdir)
    try:
        result = cli("fit", "--config", DEFAULT, *recipe, "--config", TTA, *QUICK, "--trainer.max_epochs=1")
        best = workdir / result.trainer.checkpoint_callback.best_model_path
        tested = {k: float(v) for k, v in result.trainer.callback_metrics.items() if k.startswith("test/")}
        result.trainer.predict(result.model, datamodule=result.datamodule, ckpt_path=str(best))  # as `proj predict`
    finally:
        os.chdir(cwd)
    return result, best, tested, workdir / result.trainer.log_dir / "predictions.csv"


def deployed_with(model, dm, state: dict):
    """What `proj export` deploys of a checkpoint's state_dict: raw inputs in, probabilities out, no views."""
    model = copy.deepcopy(model)
    model.load_state_dict(state)
    return torch.no_grad()(deployable(model.eval(), dm))


def mean_probabilities(model, dm, state: dict, x: torch.Tensor) -> torch.Tensor:
    """The mean over the preset's views, shifted by hand, of the deployed model's probabilities."""
    deployed = deployed_with(model, dm, state)
    return torch.stack([deployed(view(x)) for view in BY_HAND.values()]).mean(0)


def test_the_test_metrics_and_predictions_are_the_mean_over_the_views(run):
    result, best, tested, predictions = run
    model, dm = result.model, result.datamodule
    checkpoint = torch.load(best, weights_only=True)
    x, y = dm.splits["test"].tensors
    probabilities = mean_probabilities(model, dm, checkpoint["state_dict"], x)
    assert float(model.loss_fn(probabilities.log(), y)) == pytest.approx(tested["test/loss"], rel=1e-5)
    assert float((probabilities.argmax(1) == y).float().mean()) == pytest.approx(tested["test/acc"], abs=1e-6)
    # predict on that checkpoint: predictions.csv is the same mean.
    with open(predictions) as f:
        rows = list(csv.DictReader(f))
    written = torch.tensor([[float(r[f"p_{c}"]) for c in model.class_names] for r in rows])
    assert torch.allclose(written, probabilities, atol=1e-5)
    # ... which the plain model's probabilities are not: 3 steps leave them near 0.1, but the views move them ten times
    # further than the tolerance above.
    plain = deployed_with(model, dm, checkpoint["state_dict"])(x)
    assert (plain - probabilities).abs().max() > 1e-4


def test_validation_and_so_the_checkpoint_choice_see_no_views(run):
    """The val/loss the best checkpoint was chosen by is the plain model's, on the unshifted images."""
    result, best, *_ = run
    model, dm = result.model, result.datamodule
    checkpoint = torch.load(best, weights_only=True)
    score = next(v["current_score"] for k, v in checkpoint["callbacks"].items() if k.startswith("ModelCheckpoint"))
    xv, yv = (t[:128] for t in dm.splits["val"].tensors)  # QUICK: 2 validation batches of 64
    plain = deployed_with(model, dm, checkpoint["state_dict"])(xv)
    assert float(model.loss_fn(plain.log(), yv)) == pytest.approx(float(score), rel=1e-5)


def predicted(model, dm, callbacks) -> torch.Tensor:
    trainer = L.Trainer(callbacks=callbacks, logger=False, enable_progress_bar=False, enable_model_summary=False)
    return torch.cat(trainer.predict(model, datamodule=dm))


def test_the_identity_view_alone_is_the_plain_model(run):
    result, *_ = run
    model, dm = result.model, result.datamodule
    plain = predicted(model, dm, [])
    assert torch.equal(predicted(model, dm, [TestTimeAugmentation(views=["identity"])]), plain)
    assert not model._forward_hooks and not model._forward_pre_hooks  # each test and predict leaves none behind


def test_views_are_shifted_with_their_edges_and_averaged_as_probabilities():
    x = torch.randn(3, 2, 5, 6)
    names = [*BY_HAND, "hflip"]
    expected = torch.cat([*(BY_HAND[n](x) for n in BY_HAND), x.flip(-1)])
    assert torch.equal(stacked_views(x, names, pixels=1), expected)
    two = torch.cat([x[..., 2:], x[..., -1:], x[..., -1:]], dim=-1)  # pixels=2, left
    assert torch.equal(stacked_views(x, ["shift_left"], pixels=2), two)
    logits = torch.randn(4 * 3, 5) * 30  # some probabilities round to 0 or 1 in float32
    mean = logits.unflatten(0, (4, 3))
    assert torch.allclose(averaged_outputs(logits, 4, "softmax").softmax(-1), mean.softmax(-1).mean(0), atol=1e-6)
    assert torch.allclose(averaged_outputs(logits, 4, "sigmoid").sigmoid(), mean.sigmoid().mean(0), atol=1e-6)
    assert averaged_outputs(logits, 4, "sigmoid").isfinite().all()
    assert torch.equal(averaged_outputs(logits, 4, "outputs"), mean.mean(0))


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--config", str(CONFIGS / "experiment" / "diabetes_regression.yaml"), "--config", TTA],
            "but the data's input_shape is (10,) (a table, sequences or text): leave out configs/callbacks/tta.yaml",
        ),
        (
            ["--config", str(CONFIGS / "experiment" / "japanese_vowels.yaml"), "--config", TTA],
            "but the data's input_shape is (12,)",
        ),
        (
            ["--config", TTA, "--trainer.callbacks.views=[identity, vflip]"],
            "views=['identity', 'vflip']: give each of them at most once, at least one, from identity, shift_up",
        ),
    ],
    ids=["table", "sequences", "unknown-view"],
)
def test_what_has_no_views_is_refused_before_training(in_tmp, capsys, args, expected):
    line = usage_error(capsys, "fit", "--config", DEFAULT, *args, *QUICK)
    assert expected in line
    assert not list(in_tmp.rglob("*.ckpt"))


def test_probabilities_need_a_model_that_has_them():
    from proj.extras.tta.test_time_augmentation import averaging_mode

    assert [averaging_mode("auto", t) for t in ("classification", "multilabel", "regression")] == [
        "softmax",
        "sigmoid",
        "outputs",
    ]
    with pytest.raises(ValueError, match="task is regression: use average: outputs"):
        averaging_mode("probabilities", "regression")
