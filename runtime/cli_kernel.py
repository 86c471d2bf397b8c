"""The one place that decides how every `mtc-*` command meets the user: errors, Ctrl-C, missing
extras, usage mistakes and output paths. It lives in `runtime` because all three packages import
it and `runtime` is the one that imports neither of the others.

Exit codes: 0 done, 2 a mistake the user can fix (one `error: ...` line on stderr, no traceback),
130 interrupted (one line saying what was kept and how to continue). A bug keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from runtime.errors import MtcError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell tool killed by SIGPIPE returns

# Third-party module -> the extra of pyproject.toml that installs it.
EXTRAS: dict[str, str] = {
    "torch": "compress",
    "torch_pruning": "compress",
    "torchvision": "compress",
    "matplotlib": "plots",
    "onnx": "export",
    "onnxscript": "export",
    "onnxslim": "export",
    "onnxruntime": "onnx",
}


class MissingExtraError(MtcError, ModuleNotFoundError):
    """A module of an optional extra is not installed (e.g. torch on the runtime-only install)."""


class OutputPathError(MtcError):
    """An output path that cannot be written (a file where a folder is needed, under a file...)."""


class CliInterrupted(KeyboardInterrupt):
    """Ctrl-C, re-raised by a command that knows what it kept: str() is that one line."""


# What needs both the torch side and the ONNX stack gets the extra that installs both.
NEEDS_ALL = ("mtc-export", "mtc-demo", "export.")


def missing_extra(exc: ModuleNotFoundError, what: str = "this command") -> MissingExtraError:
    """The named error for an import of an optional dependency that failed."""
    root = (exc.name or "").split(".")[0]
    extra = "all" if what.startswith(NEEDS_ALL) else EXTRAS.get(root, "all")
    err = MissingExtraError(
        f"{what} needs {root or 'a module'}, which is not installed (the base install is the "
        f"torch-free runtime); install the extra: pip install 'mtc[{extra}]'"
    )
    err.name = exc.name
    return err


def one_line_excepthook() -> None:
    """Make an uncaught MissingExtraError print as one `error:` line. Why a hook: the failing
    import of a package's dependency (e.g. torch in `import compressor`) runs inside the
    console-script wrapper or the user's own import, before any `main` can catch it; every other
    exception keeps Python's own report."""
    previous = sys.excepthook
    if getattr(previous, "_mtc_one_line", False):
        return

    def hook(exc_type: Any, exc: Any, tb: Any) -> None:
        if isinstance(exc, MissingExtraError):
            print_error(str(exc))
        else:
            previous(exc_type, exc, tb)

    hook._mtc_one_line = True  # type: ignore[attr-defined]
    sys.excepthook = hook


def one_line(message: object) -> str:
    """Fold any message to one line; a DataLoader worker's wrapped traceback keeps only the
    original error's own message (its last line, without the exception class name)."""
    text = str(message)
    if "Original Traceback" in text:
        last = [ln for ln in text.strip().splitlines() if ln.strip()][-1]
        text = re.sub(r"^[\w.]+(Error|Exception|Interrupt)\w*: ", "", last.strip())
    return " ".join(text.split())


def print_error(message: object) -> None:
    """`error: ...` on stderr, one line. Under torchrun every process reports: name the rank."""
    rank = (
        f"[rank {os.environ.get('RANK', '?')}] "
        if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1
        else ""
    )
    print(f"error: {rank}{one_line(message)}", file=sys.stderr, flush=True)


def _os_error_text(e: OSError) -> str:
    where = f"{e.filename}: " if e.filename else ""
    return f"{where}{e.strerror or e}"


def run_cli(
    main_fn: Callable[[Sequence[str] | None], int | None],
    argv: Sequence[str] | None = None,
    *,
    prog: str = "this command",
    sigterm: bool = False,
) -> int:
    """Run `main_fn(argv)` and turn what the user can fix into exit codes instead of tracebacks.

    MtcError and OSError (a full disk, a folder without write permission) -> one line, exit 2;
    a missing optional dependency -> the extra to install, exit 2; Ctrl-C -> one line, 130
    (`CliInterrupted` carries what was kept); argparse's exits keep their code. Anything else is
    a bug and propagates with its traceback.
    """
    # FFmpeg inside OpenCV prints its own lines (e.g. "moov atom not found") before our one-line
    # error about the same file; a user who wants them sets the variable
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    before, warnings.formatwarning = warnings.formatwarning, _one_line_warning
    restore = _sigterm_as_interrupt() if sigterm else None
    try:
        code = main_fn(argv)
    except SystemExit as e:  # argparse: --help (0) or a usage error already printed (2)
        return e.code if isinstance(e.code, int) else (EXIT_OK if e.code is None else EXIT_USAGE)
    except MtcError as e:
        print_error(e)
        return EXIT_USAGE
    except KeyboardInterrupt as e:
        kept = str(e) if isinstance(e, CliInterrupted) and str(e) else "nothing half-written kept"
        print(f"interrupted: {one_line(kept)}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] not in EXTRAS:
            raise
        print_error(missing_extra(e, prog))
        return EXIT_USAGE
    except BrokenPipeError:  # `mtc-run ... | head`: the reader left; nothing to report
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except OSError as e:
        print_error(f"{_os_error_text(e)}; check the path, its permissions and the free space")
        return EXIT_USAGE
    finally:
        warnings.formatwarning = before
        if restore is not None:
            restore()
    return EXIT_OK if code is None else int(code)


def _sigterm_as_interrupt() -> Callable[[], None] | None:
    """`sigterm=True`: SIGTERM (kill, a job scheduler, docker stop) stops the command as Ctrl-C
    does, through its KeyboardInterrupt handling (nothing half-written, exit 130). Returns
    what restores the previous handler; None off the main thread (signals cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, handler)

    def restore() -> None:
        signal.signal(signal.SIGTERM, previous)

    return restore


def _one_line_warning(message: Any, category: Any, *args: Any, **kwargs: Any) -> str:
    """A warning as one `warning: ...` line (not Python's file:line plus source line)."""
    return f"warning: {one_line(message)}\n"


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout replaced (tests) or already closed
        pass


# --- argument parsing ------------------------------------------------------------------------
def _shown(default: object) -> bool:
    """Whether --help prints this default (not None, suppressed, off or empty)."""
    if default is None or default is argparse.SUPPRESS or default is False:
        return False
    return not (isinstance(default, (str, tuple, list)) and not default)


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the description's layout and shows every default worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text or not _shown(action.default):  # the text may say it already
            return text
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return f"{text} (default: %(default)s)".strip()
        return text


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors and defaults in --help."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        # argparse prints no help line for a flag without help text: give it its default
        if kwargs.get("help") is None and _shown(kwargs.get("default")):
            kwargs["help"] = "(default: %(default)s)"
        return super().add_argument(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_USAGE)


def default_help(help_text: str | None, default: object) -> str:
    """Help text with the default a dataclass field gives a flag whose argparse default is
    SUPPRESS (the config, not the parser, owns defaults)."""
    text = help_text or ""
    if "default" in text or not _shown(default):
        return text
    if isinstance(default, (tuple, list)):
        default = " ".join(str(v) for v in default)
    if default is True:
        default = "on"
    return f"{text} (default: {default})".strip()


# --- output paths, checked before any work starts --------------------------------------------
def _blocking_file(path: Path) -> Path | None:
    """The first existing ancestor of `path` (or `path` itself) that is not a folder."""
    for p in [path, *path.parents]:
        if p.exists():
            return None if p.is_dir() else p
    return None


def _first_existing(path: Path) -> Path:
    for p in [path, *path.parents]:
        if p.exists():
            return p
    return Path(".")


def check_output_dir(path: str | os.PathLike[str], flag: str = "-o") -> Path:
    """Refuse a folder path that is a file, lies under a file or cannot be created/written.
    Creates nothing (a failed run must not leave an empty folder behind)."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OutputPathError(f"{flag} {p} is a file; expected a folder (new or existing)")
    blocker = _blocking_file(p.parent)
    if blocker is not None:
        raise OutputPathError(
            f"{flag} {p} cannot be created: {blocker} is a file, not a folder; choose another path"
        )
    base = _first_existing(p)
    if not os.access(base, os.W_OK | os.X_OK):
        raise OutputPathError(f"{flag} {p}: {base} is not writable; choose another path")
    return p


def check_output_file(
    path: str | os.PathLike[str], flag: str, suffixes: Sequence[str] = ()
) -> Path:
    """Refuse a file path that is a folder, lies under a file, is not writable or (when
    `suffixes` is given) has another suffix. Creates nothing."""
    p = Path(path)
    if p.is_dir() or str(path).endswith(("/", os.sep)):
        raise OutputPathError(f"{flag} {p} is a folder; expected a file path, e.g. {p}/out.json")
    blocker = _blocking_file(p.parent)
    if blocker is not None:
        raise OutputPathError(
            f"{flag} {p} cannot be written: {blocker} is a file, not a folder; choose another path"
        )
    if suffixes and p.suffix.lower() not in suffixes:
        raise OutputPathError(f"{flag} {p} has suffix {p.suffix!r}; expected {', '.join(suffixes)}")
    base = p if p.exists() else _first_existing(p.parent)
    if not os.access(base, os.W_OK):
        raise OutputPathError(f"{flag} {p}: {base} is not writable; choose another path")
    return p


def check_input_path(path: str | os.PathLike[str], flag: str, what: str) -> Path:
    """An input that must exist: one line naming the flag and what was expected."""
    p = Path(path)
    if not p.exists():
        raise MtcError(f"{flag} {p} does not exist; expected {what}")
    return p


def remove_empty_dir(path: str | os.PathLike[str] | None, existed: bool) -> None:
    """After a failed run: remove the output folder if this run created it and left it empty."""
    if path is None or existed:
        return
    p = Path(path)
    try:
        if p.is_dir() and not any(p.iterdir()):
            p.rmdir()
    except OSError:
        pass
