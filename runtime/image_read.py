"""Reading an image file with the checks OpenCV leaves out: `cv2.imread` decodes a truncated
JPEG or PNG partly (the missing rows grey or black) and returns it as if it were whole. A file
whose JPEG end-of-image marker or PNG IEND chunk is missing is refused here, by name, so a cut-off
frame is never scored as a whole evaluation image or run as a normal frame.
Shared by the runtime's image sources and the training/evaluation data loader."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from runtime.errors import MtcError

_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"
_PNG_SIG = b"\x89PNG\r\n\x1a\n"
# Bytes allowed after the end marker (some cameras pad files; more than this is not a JPEG end).
_TRAILER_SLACK = 1024


class ImageDecodeError(MtcError):
    """An image file is missing, unreadable, truncated or not an image."""


def truncation(data: bytes) -> str | None:
    """Why `data` is a cut-off JPEG/PNG, or None when its end marker is where it belongs.
    Other formats are left to the decoder."""
    if data.startswith(_JPEG_SOI):
        # 0xFFD9 cannot occur inside entropy-coded data (0xFF is stuffed), so the last one is
        # the image's end unless the file was cut before it (an EXIF thumbnail has its own).
        end = data.rfind(_JPEG_EOI)
        if end < 0 or end + 2 < len(data) - _TRAILER_SLACK:
            return "truncated JPEG (no end-of-image marker FFD9 at the end of the file)"
    elif data.startswith(_PNG_SIG):
        iend = data.rfind(b"IEND")
        if iend < 0 or iend + 8 < len(data) - _TRAILER_SLACK:
            return "truncated PNG (no IEND chunk at the end of the file)"
    return None


def file_truncation(path: str | os.PathLike[str]) -> str | None:
    """`truncation` from the file's first and last bytes only (cheap enough to check every
    file of a data set before training); also says when the file cannot be read."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - _TRAILER_SLACK - 12))
            tail = f.read()
    except OSError as e:
        return f"cannot read ({e.strerror or e})"
    if size <= len(tail):
        return truncation(tail)
    # the marker must sit within the tail; pad so `truncation` measures from the real end
    return truncation(head + tail) if head.startswith((_JPEG_SOI, _PNG_SIG)) else None


def decode_image(data: bytes, flags: int = cv2.IMREAD_COLOR, name: str = "image") -> np.ndarray:
    """Decode bytes; ImageDecodeError (naming `name`) for truncated or undecodable data."""
    why = truncation(data)
    if why is not None:
        raise ImageDecodeError(f"{name}: {why}; re-copy or delete the file")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), flags) if data else None
    if img is None or img.size == 0:
        raise ImageDecodeError(
            f"{name}: OpenCV cannot decode this file ({len(data)} bytes; corrupt or not an "
            "image); re-copy or delete it"
        )
    return img


def read_image(path: str | os.PathLike[str], flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    """`cv2.imread` with the truncation check; ImageDecodeError names the file."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ImageDecodeError(f"{path}: cannot read ({e.strerror or e})") from None
    return decode_image(data, flags, str(path))
