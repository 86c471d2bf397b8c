"""Errors users can fix. CLIs print these as one line (no traceback) and exit 2."""

from __future__ import annotations


class MtcError(Exception):
    """Base of all user-facing mtc errors; CLIs print these as one line and exit 2."""
