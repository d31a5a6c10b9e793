"""Test-time augmentation: the test metrics and predictions of the average over shifted (and flipped) views of each
image batch (test_time_augmentation.py; the views in views.py). Preset: configs/callbacks/tta.yaml. Docs:
docs/extras/tta.md."""

from proj.extras.tta.test_time_augmentation import TestTimeAugmentation

__all__ = ["TestTimeAugmentation"]
