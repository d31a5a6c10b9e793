"""LightningDataModules. `base.py` holds what every dataset shares; one file per dataset reads its samples."""

from proj.data.base import ArrayDataModule
from proj.data.cifar import CIFAR10DataModule, CIFAR100DataModule
from proj.data.diabetes import DiabetesDataModule
from proj.data.digits import DigitsDataModule, MultiLabelDigitsDataModule
from proj.data.errors import DataError
from proj.data.image_folder import ImageFolderDataModule
from proj.data.imbalanced_digits import ImbalancedDigitsDataModule, ScarceDigitsDataModule
from proj.data.sequence_data import JapaneseVowelsDataModule, SequenceDataModule, SequenceFileDataModule
from proj.data.sequences import Padded
from proj.data.stdlib_docs import StdlibDocstringsDataModule
from proj.data.tabular import CSVDataModule
from proj.data.text import TextDataModule
from proj.data.text_files import TextCSVDataModule

__all__ = [
    "ArrayDataModule",
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "CSVDataModule",
    "DataError",
    "DiabetesDataModule",
    "DigitsDataModule",
    "ImageFolderDataModule",
    "ImbalancedDigitsDataModule",
    "JapaneseVowelsDataModule",
    "MultiLabelDigitsDataModule",
    "Padded",
    "ScarceDigitsDataModule",
    "SequenceDataModule",
    "SequenceFileDataModule",
    "StdlibDocstringsDataModule",
    "TextCSVDataModule",
    "TextDataModule",
]
