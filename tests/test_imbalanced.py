"""On the embedded imbalanced digits, oversampling and class weights each raise macro recall above no correction."""

import pytest

from conftest import CONFIGS, DEFAULT, cli

pytestmark = pytest.mark.slow


def macro_recall(experiment: str) -> float:
    result = cli(
        "fit",
        "--config",
        DEFAULT,
        "--config",
        str(CONFIGS / "experiment" / f"imbalanced_{experiment}.yaml"),
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    )
    return float(result.trainer.callback_metrics["test/recall"])  # on the full, balanced test split


def test_oversampling_and_class_weights_beat_no_correction(in_tmp):
    baseline = macro_recall("none")
    oversampled = macro_recall("oversample")
    weighted = macro_recall("class_weights")
    print(f"macro recall: none {baseline:.3f}, oversample {oversampled:.3f}, class weights {weighted:.3f}")
    assert oversampled > baseline + 0.1
    assert weighted > baseline + 0.1
