"""Nothing half-written: artifacts are written into a hidden folder inside the output folder and
renamed into place only once every check passed (same filesystem, so each rename is atomic).
On any failure the hidden folder is removed and the output folder is as it was."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType

from export.errors import OutputPathError


def prepare_output_dir(out_dir: Path) -> Path:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputPathError(
            f"cannot create output folder {out_dir} ({e.strerror}); pass a writable -o DIR"
        ) from None
    if not out_dir.is_dir() or not os.access(out_dir, os.W_OK | os.X_OK):
        raise OutputPathError(
            f"output folder {out_dir} is not a writable folder; pass a writable -o DIR"
        )
    return out_dir


class Staging:
    def __init__(self, out_dir: Path):
        self.out_dir = prepare_output_dir(Path(out_dir))
        try:
            self.dir = Path(tempfile.mkdtemp(prefix=".mtc-export-", dir=self.out_dir))
        except OSError as e:
            raise OutputPathError(
                f"cannot write into {self.out_dir} ({e.strerror}); pass a writable -o DIR"
            ) from None
        self.names: list[str] = []

    def path(self, name: str) -> Path:
        if name not in self.names:
            self.names.append(name)
        return self.dir / name

    def write_bytes(self, name: str, data: bytes) -> Path:
        p = self.path(name)
        p.write_bytes(data)
        return p

    def commit(self) -> list[Path]:
        """Rename every staged file into the output folder; returns the final paths."""
        out = []
        for name in self.names:
            final = self.out_dir / name
            os.replace(self.dir / name, final)
            out.append(final)
        self.names = []
        return out

    def discard(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Staging:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.discard()
