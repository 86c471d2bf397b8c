"""Data: the synthetic BDD100K-layout generator and the loader for both BDD100K layouts."""

from compressor.data.augment import AugmentConfig
from compressor.data.bdd import BddDataset, collate, make_loader
from compressor.data.config import DataConfig
from compressor.data.errors import (
    DataConfigError,
    DatasetNotFoundError,
    EmptyDatasetError,
    ImageReadError,
    LabelError,
    MaskSizeError,
    OutputDirError,
    UnlabeledImagesWarning,
)
from compressor.data.labels import (
    LabelIssuesWarning,
    LabelTally,
    MaskValueError,
    StrictLabelError,
)
from compressor.data.layouts import LAYOUTS
from compressor.data.synth import SynthConfig, SynthReport, generate

__all__ = [
    "LAYOUTS",
    "AugmentConfig",
    "BddDataset",
    "DataConfig",
    "DataConfigError",
    "DatasetNotFoundError",
    "EmptyDatasetError",
    "ImageReadError",
    "LabelError",
    "LabelIssuesWarning",
    "LabelTally",
    "MaskSizeError",
    "MaskValueError",
    "OutputDirError",
    "SynthConfig",
    "StrictLabelError",
    "SynthReport",
    "UnlabeledImagesWarning",
    "collate",
    "generate",
    "make_loader",
]
