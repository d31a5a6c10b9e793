"""An imbalanced table on disk, made from scikit-learn's bundled breast-cancer data (no download).

    python -m proj.data.imbalanced_table data/imbalanced_table.csv

writes 30 numeric feature columns and a `diagnosis` column (benign / malignant) with 90% of the malignant rows
dropped: 21 malignant against 357 benign. It is a plain CSV for `proj.data.CSVDataModule`
(configs/data/imbalanced_table.yaml), the tabular counterpart of the imbalanced digits, on which the samplers,
class weights, SMOTE and a GAN (configs/experiment/table_*.yaml, benchmarks/imbalanced_table.py) are compared.
Unlike the imbalanced digits, the whole file is imbalanced, so validation and test are too (stratified): macro recall
weighs the few malignant test rows as much as the many benign ones.
"""

import csv
from pathlib import Path

import numpy as np


def write_imbalanced_table(path: str, keep_fraction: float = 0.1, seed: int = 0) -> Path:
    """Write the table to `path` and return it.

    Args:
        path: the CSV file to write (its folder is created).
        keep_fraction: the share of the malignant rows kept (0.1: 21 of 212).
        seed: which malignant rows are kept.
    """
    from sklearn.datasets import load_breast_cancer  # here: scikit-learn is slow to import

    if not 0.0 < keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction={keep_fraction} must be in (0, 1]")
    data = load_breast_cancer()
    malignant = np.flatnonzero(data.target == 0)  # sklearn's coding: 0 malignant, 1 benign
    kept = np.random.default_rng(seed).permutation(malignant)[: max(2, round(len(malignant) * keep_fraction))]
    rows = np.sort(np.concatenate([np.flatnonzero(data.target == 1), kept]))
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([name.replace(" ", "_") for name in data.feature_names] + ["diagnosis"])
        for r in rows:
            writer.writerow([f"{v:.6g}" for v in data.data[r]] + [data.target_names[data.target[r]]])
    return out


if __name__ == "__main__":
    from jsonargparse import CLI

    print(CLI(write_imbalanced_table))
