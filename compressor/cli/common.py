"""Shared plumbing of the compressor CLIs. How errors, Ctrl-C and usage mistakes reach the user
is decided once for every `mtc-*` command in `runtime.cli_kernel` (re-exported here)."""

from __future__ import annotations

from collections.abc import Sequence

from runtime.cli_kernel import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    CliInterrupted,
    Parser,
    print_error,
    run_cli,
)
from runtime.errors import MtcError

__all__ = [
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "CliInterrupted",
    "Parser",
    "parse_pair",
    "print_error",
    "run_cli",
]


def parse_pair(values: Sequence[int] | None, name: str) -> tuple[int, int] | None:
    """Validate a two-integer flag such as `--imgsz H W`; why: argparse nargs=2 allows zeros."""
    if values is None:
        return None
    if len(values) != 2 or any(int(v) <= 0 for v in values):
        raise MtcError(
            f"{name} got {list(values)}; expected two positive integers, e.g. {name} 384 640"
        )
    return int(values[0]), int(values[1])
