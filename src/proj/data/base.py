"""What every DataModule shares: seeded splits, standardisation, resampling, augmentation, loaders.

A dataset subclass only says how to read its samples (`load_arrays`, optionally `load_test_arrays` for a
fixed test set) and declares its `task`, `input_shape` and `num_classes` (classification), which the CLI links
into the model so they are never written twice in YAML.

Classification targets are class indices (int64) and the splits are stratified. Regression targets are
float32 values, (N,) or (N, k), split by a plain seeded shuffle; batches carry them raw, and the training
split's mean and std per target (`target_stats`, saved with the run) are left to the model to apply.

The splits hold raw values (uint8 images stay uint8: four times less memory, cheaper to load). Everything
else happens batched on the training device in `on_after_batch_transfer`: scaling to [0, 1], augmentation
and MixUp / CutMix (training batches only), then standardisation with statistics of the training split.
"""

from typing import Any, Literal

import lightning.pytorch as L
import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, TensorDataset

from proj.data.augment import BatchMix
from proj.data.errors import DataError
from proj.data.gan_oversampling import check_gan_settings, gan_split
from proj.data.image_files import ImageFiles
from proj.data.loaders import Loaders, split_labels
from proj.data.predict_only import PredictOnly
from proj.data.resampling import check_smote_settings, smote_split, synthetic_ids
from proj.data.sampling import SamplerMode
from proj.data.splits import check_split_settings, split_indices
from proj.data.standardization import channel_stats, standardize
from proj.data.targets import TargetsMixin, target_stats

# x: the samples as an array, as files read when asked (an image folder's lazy path), or as a dataset of its own
# with `subset` (and `concat` for a fixed test set): variable-length sequences (sequences.Sequences)
Arrays = tuple[np.ndarray | Tensor | ImageFiles | Dataset, np.ndarray | Tensor]


def as_samples(x: Any) -> Tensor | Dataset:
    """An array as a tensor; a dataset that picks its own subsets (files, sequences) as it is."""
    return x if hasattr(x, "subset") else torch.as_tensor(x)


class ArrayDataModule(Loaders, PredictOnly, TargetsMixin, L.LightningDataModule):
    """A labelled dataset held as tensors: split once in `setup`, served by DataLoaders.

    `task` (classification or regression) is set by the dataset; what follows from it is in `TargetsMixin`.

    Args:
        batch_size: samples per batch and per device (the global batch is batch_size x devices x nodes).
        num_workers, pin_memory, persistent_workers: DataLoader settings. In-memory data needs no workers.
        val_fraction, test_fraction: shares of the data for validation and test (test_fraction is ignored
            by datasets with a fixed test set, such as CIFAR).
        split_seed: seed of the split (stratified for classification), of the resampling sampler, SMOTE and the GAN.
        standardize: subtract the mean and divide by the std of each channel / feature of the training split.
        sampler: none | oversample | undersample | balanced: rebalance classes in each training epoch;
            smote (tables only): add synthetic minority rows to the training split, once (resampling.py);
            gan (tables only): the same rows written by a conditional GAN (gan_oversampling.py).
        class_weights: none | balanced | one weight per class: the model's loss weights (linked into it).
        augment: kornia augmentations (class_path list), applied to training batches on their device.
        mixup_alpha, cutmix_alpha: > 0 turns MixUp / CutMix on (Beta(alpha, alpha)); targets become soft.
        mix_prob: the probability that a training sample is mixed.
        device_resident: keep the training split on the training device and draw batches by index (no
            DataLoader, no workers, no collation): the fast path for datasets that fit in device memory.
            "auto" (default): when the training split takes at most 1 GiB and num_workers is 0.
        predict_split: the split `predict` runs on (test by default), unless the dataset is given new samples
            (an image folder's predict_root, a CSV's predict_path).
        cv_folds, cv_fold: k-fold cross-validation (`python -m proj cv`): the test split is fold `cv_fold` of a
            `cv_folds`-fold partition (stratified for classification); validation is carved out of the others.
        smote_neighbors: sampler smote: the nearest same-class rows each synthetic row may lie towards.
        gan_epochs, gan_batch_size: sampler gan: the GAN's training epochs and rows per step (a multiple of 10).
    """

    input_shape: tuple[int, ...]
    # Multiplies raw values before augmentation so images lie in [0, 1] (kornia's colour ops expect that).
    scale: float = 1.0

    def __init__(
        self,
        batch_size: int = 64,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        standardize: bool = True,
        sampler: SamplerMode = "none",
        class_weights: Literal["none", "balanced"] | list[float] = "none",
        augment: list[nn.Module] | None = None,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        mix_prob: float = 1.0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        device_resident: bool | Literal["auto"] = "auto",
        predict_split: Literal["train", "val", "test"] = "test",
        cv_folds: int = 0,
        cv_fold: int = 0,
        smote_neighbors: int = 5,
        gan_epochs: int = 300,
        gan_batch_size: int = 500,
    ) -> None:
        super().__init__()
        for name, value, least in (("batch_size", batch_size, 1), ("num_workers", num_workers, 0)):
            if value < least:
                raise DataError(f"data.{name}={value} must be at least {least}")
        check_split_settings(val_fraction, test_fraction, cv_folds, cv_fold)
        if sampler not in ("none", "oversample", "undersample", "balanced", "smote", "gan"):
            raise DataError(f"data.sampler={sampler!r}: expected none, oversample, undersample, balanced, smote or gan")
        self.check_task(sampler, class_weights, mixup_alpha, cutmix_alpha)  # first: its advice fits the task
        check_smote_settings(sampler, getattr(self, "input_shape", None), smote_neighbors)
        check_gan_settings(sampler, getattr(self, "input_shape", None), gan_epochs, gan_batch_size)
        self.save_hyperparameters(ignore=["augment"])
        self.batch_size = batch_size
        self.augment = nn.Sequential(*augment) if augment else None
        self.mix = BatchMix(self.num_classes if self.is_classification else 0, mixup_alpha, cutmix_alpha, mix_prob)
        self.splits: dict[str, Dataset] = {}
        # Statistics fitted on the training split; saved in checkpoints (state_dict) so that test / predict /
        # export use the values the model was trained with.
        self.stats: dict[str, Any] = {}
        self.restored: dict[str, Any] = {}
        self.prepared = False  # training batches come from the device already scaled and standardised

    # --- what a dataset implements ---------------------------------------------------------------------

    def load_arrays(self) -> Arrays:
        """All samples (or, with a fixed test set, all training samples): x of shape (N, *input_shape), y of
        shape (N,) (class indices, or values), or (N, k) for k regression targets."""
        raise NotImplementedError

    def load_test_arrays(self) -> Arrays | None:
        """A fixed test set, if the dataset has one; else the test split is carved out of `load_arrays`."""
        return None

    def load_predict_arrays(self) -> tuple[np.ndarray | Tensor, list[str]] | None:
        """New, unlabelled samples to predict and an id for each, when the dataset is configured with some."""
        return None

    def sample_id(self, index: int) -> str:
        """A name for sample `index` of `load_arrays` (a file, a line): predictions.csv's id column."""
        return str(index)

    def sample_ids(self, split: str) -> list[str]:
        if split == "predict":
            return self.predict_ids
        return synthetic_ids(len(self.splits[split]), [self.sample_id(int(i)) for i in self.indices[split]])

    def preprocess(self, x: Tensor, train: Tensor) -> Tensor:
        """Fit anything else on the training rows `train` (keep it in self.stats) and apply it to all of x."""
        return x

    # --- splits ----------------------------------------------------------------------------------------

    def split_indices(self, y: np.ndarray, fixed_test: int = 0) -> dict[str, np.ndarray]:
        """Seeded indices, stratified for classification: the same split on every rank and every run.

        With a fixed test set, its `fixed_test` samples come last in y and only validation is carved out.
        """
        hp = self.hparams
        return split_indices(
            y, stratify=self.task != "regression", val_fraction=hp.val_fraction, test_fraction=hp.test_fraction,
            seed=hp.split_seed, fixed_test=fixed_test, cv_folds=hp.cv_folds, cv_fold=hp.cv_fold,
            classes=self.classes,
        )  # fmt: skip

    def setup(self, stage: str | None = None) -> None:
        if self.predicting_only:
            return self.setup_predict_only(stage)
        if self.splits:  # made once: fit then test in one process reuses the same split and statistics
            return
        x, y = self.load_arrays()
        x, y = as_samples(x), torch.as_tensor(y)
        test = self.load_test_arrays()
        fixed_test = 0
        if test is not None:
            tx, ty = as_samples(test[0]), torch.as_tensor(test[1])
            x = x.concat(tx) if hasattr(x, "concat") else torch.cat([x, tx])
            y, fixed_test = torch.cat([y, ty]), len(ty)
        y = self.class_targets(y) if self.task != "regression" else self.float_targets(y)
        indices = {k: torch.as_tensor(v) for k, v in self.split_indices(y.numpy(), fixed_test).items()}
        self.stats = dict(self.restored)  # restored from a checkpoint, or fitted below on the training split
        x = self.preprocess(x, indices["train"])
        if self.hparams.standardize and "mean" not in self.stats:
            self.stats["mean"], self.stats["std"] = self.channel_stats(x, indices["train"])
        if self.task == "regression" and "target_mean" not in self.stats:
            self.stats["target_mean"], self.stats["target_std"] = target_stats(y[indices["train"]])
        # What a deployed model needs of the data besides the statistics, saved with them in every checkpoint: a
        # run's checkpoint alone then serves its model, without the training data (the serve extra).
        self.stats["input"] = {"dtype": str(x.dtype).removeprefix("torch."), "scale": self.scale}
        if getattr(self, "features", None):
            self.stats["input"]["features"] = list(self.features)
        self.splits = {name: self.make_split(x, y, idx, name == "train") for name, idx in indices.items()}
        if self.hparams.sampler == "smote":  # after the statistics: they describe the real training rows only
            hp = self.hparams
            self.splits["train"] = smote_split(self.splits["train"], hp.smote_neighbors, hp.split_seed, self.classes)
        if self.hparams.sampler == "gan":  # likewise: the GAN is trained on the real training rows only
            hp = self.hparams
            epochs, batch = hp.gan_epochs, hp.gan_batch_size
            self.splits["train"] = gan_split(self.splits["train"], epochs, batch, hp.split_seed, self.classes)
        self.indices = indices
        self.add_predict_split(indices["train"], y[:0])

    def class_targets(self, y: Tensor) -> Tensor:
        """Class indices (int64), or a multi-label task's 0 / 1 rows (float32), checked."""
        return self.multi_hot(y) if self.is_multilabel else y.long()

    def make_split(self, x: Tensor | ImageFiles, y: Tensor, idx: Tensor, train: bool) -> Dataset:
        """The samples at idx: a TensorDataset in memory, or files read when asked."""
        return x.subset(idx, train) if isinstance(x, ImageFiles) else TensorDataset(x[idx], y[idx])

    def channel_stats(self, x: Tensor | ImageFiles, train: Tensor) -> tuple[list[float], list[float]]:
        """Mean and std per channel of the training split (files: of a seeded sample of it, see image_folder)."""
        return channel_stats(x[train], self.scale)

    def add_predict_split(self, train: Tensor, no_labels: Tensor) -> None:
        """The new samples, if the dataset has some: unlabelled (label -1, or NaN for values, shaped and typed
        like `no_labels`), preprocessed with the training statistics."""
        new = self.load_predict_arrays()
        if new is not None:
            px, self.predict_ids = new
            fill = torch.nan if self.task == "regression" else -1
            labels = torch.full((len(px), *no_labels.shape[1:]), fill, dtype=no_labels.dtype)
            if isinstance(px, ImageFiles):
                self.splits["predict"] = px.with_labels(labels)
            else:
                self.splits["predict"] = TensorDataset(self.preprocess(torch.as_tensor(px), train), labels)

    def train_labels(self) -> Tensor:
        self.setup()
        return split_labels(self.splits["train"])

    # --- on the device ---------------------------------------------------------------------------------

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self.prepared and self.trainer is not None and self.trainer.training:
            return batch
        x, y = batch
        x = self.scaled(x)
        if self.trainer is not None and self.trainer.training:
            if self.augment is not None:
                x = self.augment(x)
            if self.mix.methods:
                x, y = self.mix(x, y)
        return self.normalize(x), y

    def scaled(self, x: Tensor) -> Tensor:
        return x.float() * self.scale if self.scale != 1.0 or not x.is_floating_point() else x

    def normalize(self, x: Tensor) -> Tensor:
        if "mean" not in self.stats:  # standardize: false (stats may hold other things: imputation, targets)
            return x
        return standardize(x, self.stats["mean"], self.stats["std"])

    def state_dict(self) -> dict[str, Any]:
        return dict(self.stats)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Lightning restores this after `setup` has run: rebuild with the statistics the model was trained on.
        self.restored = dict(state_dict)
        if self.predicting_only:  # built again: statistics given in the config give way to the checkpoint's
            self.splits = {}
            self.setup("predict")
        elif self.splits:
            self.splits = {}
            self.setup()
