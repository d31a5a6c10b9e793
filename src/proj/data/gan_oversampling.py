"""GAN oversampling (`data.sampler: gan`): a conditional GAN writes minority rows of a table's training split, once.

Like SMOTE (resampling.py) it adds synthetic rows of every smaller class until each class is as large as the
largest, and leaves validation and test real. Instead of interpolating between neighbours, it trains ctgan's CTGAN
(SDV's conditional GAN for tables) on the training split's rows, the class as its discrete column, then draws rows
conditioned on each smaller class. CTGAN takes the condition as a hint, not a rule: a drawn row carries its own
class column, and only rows whose class is the one asked for are kept (rejection sampling, as SDV does).

- Training split only: the GAN never sees a validation or test row, and the statistics (`data.standardize`,
  imputation) were fitted on the real training rows before it ran.
- Seeded by `split_seed` (ctgan's `set_random_state`, which leaves the global RNG alone) and trained on the CPU:
  every rank of a DDP run, a resumed run and a test run rebuild the same rows (GPU kernels would differ by rank).
  A rebuild in the same process (a resume loads the statistics and sets up again) reuses the rows already drawn.
- CTGAN decodes each value from a mode of a fitted mixture and may land outside anything seen; the rows are
  clipped to the real training rows' range per feature.
- Cost: CTGAN first fits a Bayesian Gaussian mixture per feature (about 0.2 s a column on 200 rows), then
  `gan_epochs` epochs of max(rows // gan_batch_size, 1) steps; benchmarks/imbalanced_table.py measures it.
"""

import hashlib
import importlib.util
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import TensorDataset

from proj.data.errors import DataError
from proj.data.resampling import name_of, refuse_images, rows_to_add, with_synthetic_rows

INSTALL = 'pip install -c constraints.txt -e ".[gan]"'
PAC = 10  # ctgan's discriminator judges packs of 10 rows: a batch must split into whole packs
MAX_DRAWS = 50  # rows drawn per row needed before giving up on a class the GAN will not write
LABEL = "class"  # the discrete column; the features are x0, x1, ...: no name of the user's can collide
_last: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}  # the rows last drawn, by (training rows, settings)


def check_gan_settings(sampler: str, input_shape: tuple[int, ...] | None, epochs: int, batch_size: int) -> None:
    """At construction: GAN oversampling is for tables, needs ctgan, at least one epoch and whole packs."""
    if sampler != "gan":
        return
    refuse_images("gan trains a GAN on table rows", input_shape, "no image")
    if epochs < 1:
        raise DataError(f"data.gan_epochs={epochs} must be at least 1")
    if batch_size < PAC or batch_size % PAC:
        raise DataError(
            f"data.gan_batch_size={batch_size} must be a positive multiple of {PAC} (ctgan's discriminator judges "
            f"packs of {PAC} rows)"
        )
    if importlib.util.find_spec("ctgan") is None:
        raise DataError(f"data.sampler=gan needs the ctgan package: {INSTALL}")


def gan_split(
    train: TensorDataset, epochs: int, batch_size: int, seed: int, classes: Sequence[str] = ()
) -> TensorDataset:
    """The training split with GAN-written rows of every smaller class appended after the real rows."""
    x, y = train.tensors
    if x.ndim != 2:  # a dataset without a declared input_shape: refuse here, as at construction
        check_gan_settings("gan", tuple(x.shape[1:]), epochs, batch_size)
    need = rows_to_add(y)
    if not need:
        return train
    key = (hashlib.sha1(x.numpy().tobytes() + y.numpy().tobytes()).hexdigest(), epochs, batch_size, seed)
    if key not in _last:
        _last.clear()  # one table's rows at a time: the cache is for a rebuild of the same split, not a store
        _last[key] = draw_rows(x, y, need, epochs, batch_size, seed, classes)
    synthetic, labels = _last[key]
    return with_synthetic_rows(train, synthetic, labels, "GAN (ctgan)", classes)


def draw_rows(
    x: torch.Tensor, y: torch.Tensor, need: dict[int, int], epochs: int, batch_size: int, seed: int,
    classes: Sequence[str],
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Train the GAN on (x, y) and draw need[c] rows of each class c, clipped to x's range per feature."""
    start = time.perf_counter()
    gan = fit_gan(x, y, epochs, batch_size, seed)
    rank_zero_info(f"GAN (ctgan): {epochs} epochs trained in {time.perf_counter() - start:.1f} s")
    rows = [draw(gan, c, n, name_of(c, classes), epochs) for c, n in need.items()]
    low, high = x.min(0).values, x.max(0).values
    synthetic = torch.as_tensor(np.concatenate(rows), dtype=x.dtype).clamp(low, high)
    labels = torch.cat([torch.full((n,), c, dtype=y.dtype) for c, n in need.items()])
    return synthetic, labels


def fit_gan(x: torch.Tensor, y: torch.Tensor, epochs: int, batch_size: int, seed: int) -> Any:
    """ctgan's CTGAN trained on the rows (x, y), the class as its discrete column, seeded by `seed`."""
    import pandas as pd  # ctgan's dependencies (~2 s to import): paid only by runs that use the GAN
    from ctgan import CTGAN

    table = pd.DataFrame(x.double().numpy(), columns=[f"x{i}" for i in range(x.shape[1])])
    table[LABEL] = y.numpy()
    gan = CTGAN(epochs=epochs, batch_size=batch_size, pac=PAC, enable_gpu=False)
    gan.set_random_state(seed)
    gan.fit(table, discrete_columns=[LABEL])
    return gan


def draw(gan: Any, label: int, n: int, name: str, epochs: int) -> np.ndarray:
    """n rows the GAN writes as class `label` when asked for it: drawn in rounds of n, the others dropped."""
    kept, found = [], 0
    for drawn in range(n, (MAX_DRAWS + 1) * n, n):
        rows = gan.sample(n, condition_column=LABEL, condition_value=label)
        rows = rows[rows[LABEL] == label].drop(columns=LABEL).to_numpy(dtype=np.float64)
        kept.append(rows)
        found += len(rows)
        if found >= n:  # how often the condition held says how well the GAN learnt the class
            rank_zero_info(f"GAN (ctgan): {found} of the {drawn} rows asked of class {name!r} came out as it (kept)")
            return np.concatenate(kept)[:n]
    raise DataError(
        f"data.sampler=gan: of {MAX_DRAWS * n} rows asked of class {name!r}, {found} came out as it, {n} are needed: "
        f"train the GAN longer (data.gan_epochs={epochs}), or use sampler: smote"
    )
