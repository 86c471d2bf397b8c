"""Shared CLI plumbing: one place decides how errors reach the user and what the exit codes mean.

Every `mtc-*` entry point wraps its body with `run_cli` so that a mistake the user can fix
(`MtcError`) prints one line instead of a traceback, and Ctrl-C exits quietly with 130.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

from runtime.errors import MtcError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def print_error(message: str) -> None:
    """Print a one-line `error: ...` to stderr (newlines folded so it stays one line). Under
    torchrun every process reports, so the line names its rank."""
    text = " ".join(str(message).split())
    rank = (
        f"[rank {os.environ.get('RANK', '?')}] "
        if int(os.environ.get("WORLD_SIZE", "1")) > 1
        else ""
    )
    print(f"error: {rank}{text}", file=sys.stderr, flush=True)


def run_cli(
    main_fn: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None
) -> int:
    """Run `main_fn(argv)` and turn user errors into exit codes instead of tracebacks.

    MtcError -> one line on stderr, exit 2. KeyboardInterrupt -> exit 130. A `None` return is 0.
    Anything else propagates: a traceback is the right output for a bug.
    """
    try:
        code = main_fn(argv)
    except MtcError as exc:
        print_error(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    return EXIT_OK if code is None else int(code)


def parse_pair(values: Sequence[int] | None, name: str) -> tuple[int, int] | None:
    """Validate a two-integer flag such as `--imgsz H W`; why: argparse nargs=2 allows zeros."""
    if values is None:
        return None
    if len(values) != 2 or any(int(v) <= 0 for v in values):
        raise MtcError(
            f"{name} got {list(values)}; expected two positive integers, e.g. {name} 384 640"
        )
    return int(values[0]), int(values[1])
