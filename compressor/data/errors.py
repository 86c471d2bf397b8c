"""Data-set errors a user can fix (wrong path, broken file). Each names the file and what is wrong,
so a bad sample among 70k is found without a debugger."""

from __future__ import annotations

from runtime.errors import MtcError
from runtime.image_read import ImageDecodeError


class DatasetNotFoundError(MtcError):
    """The data-set root, a split folder or a layout's label folder is missing."""


class LabelError(MtcError):
    """A label file is missing or malformed (bad JSON, missing key, bad box)."""


class ImageReadError(ImageDecodeError):
    """An image (or mask) file exists but cannot be decoded, or is truncated."""


class MaskSizeError(MtcError):
    """A segmentation mask's size differs from its image's."""


class EmptyDatasetError(MtcError):
    """No usable sample is left after filtering."""


class DataConfigError(MtcError):
    """A DataConfig / SynthConfig value is out of range."""


class OutputDirError(MtcError):
    """The generator's output directory cannot be used (is a file, or holds a data set already)."""


class UnlabeledImagesWarning(UserWarning):
    """Images without labels were skipped (one warning per data set, with the count)."""


class BadImagesWarning(UserWarning):
    """Samples with a truncated or unreadable file were skipped (skip_bad_images=True)."""
