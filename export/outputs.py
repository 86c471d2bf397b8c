"""Which files in an output folder belong to an export of a given name, so a second export of
that name is refused (unless --overwrite) and, with --overwrite, leaves none of the first one's
files beside the new ones (an old `<name>_fp16.onnx` with a valid sidecar next to a new model
would be picked up by the runtime as if it matched)."""

from __future__ import annotations

from pathlib import Path

from export.errors import OutputPathError


def export_file_names(name: str) -> tuple[str, ...]:
    """Every file name `export_model` can write for artifact base name `name`."""
    artifacts = [f"{name}.onnx", f"{name}_fp16.onnx", f"{name}_fp16.engine", f"{name}_fp32.engine"]
    artifacts.append(f"{name}_int8.engine")
    return (
        *artifacts,
        *(f"{a}.json" for a in artifacts),
        f"{name}_trtexec.sh",
        f"{name}_build_engine.py",
        f"{name}.lint.json",
        f"{name}_fp16.lint.json",
    )


def existing_export_files(out_dir: Path, name: str, with_lint: bool = True) -> list[Path]:
    names = [n for n in export_file_names(name) if with_lint or not n.endswith(".lint.json")]
    return [out_dir / n for n in names if (out_dir / n).is_file()]


def check_export_folder(out_dir: Path, name: str, overwrite: bool) -> None:
    """Before any work: refuse a folder that already holds an export of this name."""
    found = existing_export_files(out_dir, name, with_lint=False)  # a failed lint's report is
    if found and not overwrite:  # not an export: re-running after a fix needs no --overwrite
        shown = ", ".join(p.name for p in found[:3]) + (" ..." if len(found) > 3 else "")
        raise OutputPathError(
            f"{out_dir} already holds an export named {name!r} ({shown}); pass --overwrite to "
            "replace it (its old files are removed first), --name NEW, or another -o"
        )


def remove_stale_exports(out_dir: Path, name: str) -> list[Path]:
    """--overwrite, right before the new files are renamed into place: drop the old export's
    files (a failed new export therefore leaves the old one untouched)."""
    found = existing_export_files(out_dir, name)
    for p in found:
        p.unlink(missing_ok=True)
    return found
