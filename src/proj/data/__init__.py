"""LightningDataModules. `base.py` holds what every dataset shares; one file per dataset reads its samples."""

from proj.data.base import ArrayDataModule
from proj.data.digits import DigitsDataModule

__all__ = ["ArrayDataModule", "DigitsDataModule"]
