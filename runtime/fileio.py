"""Atomic file writes and chunked hashing.

Every artifact, report and overlay is written under a temporary name in the target folder and then
renamed over the final name, so a crash or Ctrl-C never leaves a half-written file that looks valid.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

_CHUNK = 1 << 20


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same suffix, so writers that pick a format by suffix
    still work); rename it over `path` only if the block succeeds."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=final.suffix, dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def remove_stale_temps(
    final: str | os.PathLike[str], suffix: str, min_age_s: float = 10.0
) -> list[Path]:
    """Delete temporary files of our own naming (`.<name>.<8 chars><suffix>`, what mkstemp
    makes for `final`) left by a killed run. Only files untouched for `min_age_s`: a live
    writer (video frames, a checkpoint being saved) keeps its temp file's mtime fresher."""
    final = Path(final)
    removed: list[Path] = []
    if not final.parent.is_dir():
        return removed
    now = time.time()
    for p in final.parent.glob(f".{glob.escape(final.name)}.*{glob.escape(suffix)}"):
        middle = p.name[len(final.name) + 2 : len(p.name) - len(suffix)]
        if len(middle) != 8 or not all(c.isalnum() or c == "_" for c in middle):
            continue
        try:
            if p.is_file() and now - p.stat().st_mtime >= min_age_s:
                p.unlink()
                removed.append(p)
        except OSError:
            continue
    return removed


def normal_permissions(path: str | os.PathLike[str]) -> None:
    """mkstemp creates 0600; a finished file gets what the umask allows, like open() would."""
    os.chmod(path, 0o666 & ~_umask())


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256, read in 1 MiB chunks: engines can be hundreds of MB."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()
