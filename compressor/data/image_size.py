"""An image's size from its file header, without decoding it: the label check clips boxes to the
image before any sample is loaded, and reading 70k headers costs seconds where decoding costs
minutes."""

from __future__ import annotations

import struct
from pathlib import Path

import cv2

_PNG_SIG = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (baseline, progressive, lossless, ...); C4, C8, CC are not frames.
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM and RSTn carry no length


def _jpeg_size(f) -> tuple[int, int] | None:  # type: ignore[no-untyped-def]
    f.seek(2)
    while True:
        byte = f.read(1)
        while byte == b"\xff":  # fill bytes before a marker
            byte = f.read(1)
        if not byte:
            return None
        marker = byte[0]
        if marker in _STANDALONE:
            continue
        if marker in (0xD8, 0xD9, 0xDA):  # SOI again, EOI or scan data before any frame
            return None
        head = f.read(2)
        if len(head) < 2:
            return None
        (length,) = struct.unpack(">H", head)
        if marker in _SOF:
            data = f.read(5)
            if len(data) < 5:
                return None
            h, w = struct.unpack(">HH", data[1:5])
            return w, h
        f.seek(length - 2, 1)
        byte = f.read(1)
        if byte != b"\xff":
            return None


def image_size(path: str | Path) -> tuple[int, int] | None:
    """(width, height) from a JPEG or PNG header; other formats are decoded. None when the
    file cannot tell (its decoding error is the loader's to report, by name)."""
    try:
        with open(path, "rb") as f:
            head = f.read(24)
            if head.startswith(_PNG_SIG) and head[12:16] == b"IHDR":
                w, h = struct.unpack(">II", head[16:24])
                return (w, h) if w > 0 and h > 0 else None
            if head.startswith(b"\xff\xd8"):
                size = _jpeg_size(f)
                if size is not None and min(size) > 0:
                    return size
    except OSError:
        return None
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    return None if img is None else (int(img.shape[1]), int(img.shape[0]))
