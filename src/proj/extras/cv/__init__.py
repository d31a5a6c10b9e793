"""k-fold cross-validation: `python -m proj cv --config configs/default.yaml --folds 5` (cross_validation.py).
Docs: docs/extras/cv.md."""

COMMANDS = {"cv": ("proj.extras.cv.cross_validation", "k-fold cross-validation: mean and std of the tests")}
