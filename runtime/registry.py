"""One strict name -> entry registry, used by every table a user can extend (models,
importances, data layouts, detection decoders, runtime backends, memory adapters, frame sources,
latency timers, TensorRT targets).

Strict means: a name registered twice raises (naming both claimants), and an unknown name
raises listing the valid names and the closest match. Each registry raises its own named error
class, so callers catch what they caught before. Lives in `runtime` (the lowest layer: numpy only,
Python 3.10) so both sides use the same one.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar, overload

from runtime.errors import MtcError

T = TypeVar("T")


class _Missing:
    """No entry given: `register(name)` is then a decorator."""


_MISSING = _Missing()


class RegistryError(MtcError):
    """Default error of a registry that names no error class of its own."""


class Registry(Generic[T]):
    """`kind` names an entry in messages ("model", "detection decoder"); `error` is raised for
    an unknown name, `duplicate_error` (default `error`) for a name taken already.

    Message parts: `listed` labels the list of names ("valid", "registered models"), `also`
    lists accepted words that are not entries (e.g. "auto"), `unknown` is the lead of the
    unknown-name message (`{kind}` and `{name}` filled in; with `{names}` in it, the names go
    there instead of after a `listed` label) and `fix` is appended to it."""

    def __init__(
        self,
        kind: str,
        error: type[Exception] = RegistryError,
        duplicate_error: type[Exception] | None = None,
        *,
        listed: str = "valid",
        also: tuple[str, ...] = (),
        unknown: str = "unknown {kind} {name}",
        fix: str = "",
    ) -> None:
        self.kind = kind
        self._error = error
        self._duplicate_error = duplicate_error or error
        self._listed, self._also, self._unknown, self._fix = listed, also, unknown, fix
        self._entries: dict[str, T] = {}

    @overload
    def register(self, name: str) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, entry: T) -> T: ...

    def register(self, name: str, entry: T | _Missing = _MISSING) -> T | Callable[[T], T]:
        """`reg.register(name, entry)`, or `@reg.register(name)` as a decorator; returns the
        entry. A name taken already raises `duplicate_error`."""
        if isinstance(entry, _Missing):
            return lambda e: self._add(name, e)
        return self._add(name, entry)

    def _add(self, name: str, entry: T) -> T:
        self.check_free(name, entry)
        self._entries[name] = entry
        return entry

    def check_free(self, name: str, entry: object) -> None:
        """Raise `duplicate_error` if `name` is taken (for a caller that registers in several
        registries at once and checks them all first)."""
        if name in self._entries:
            raise self._duplicate_error(
                f"{self.kind} {name!r} is already registered by {_describe(self._entries[name])}; "
                f"{_describe(entry)} cannot take the name too: register it under another name"
            )

    def unregister(self, name: str) -> T:
        """Remove `name` (tests, or a plugin replacing its own entry); unknown names raise."""
        self.get(name)
        return self._entries.pop(name)

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise self._error(self.unknown_message(name))
        return self._entries[name]

    def unknown_message(self, name: object, lead: str | None = None) -> str:
        """What `get` says about an unknown `name` (`lead` replaces the message's opening)."""
        template = lead or self._unknown
        names = ", ".join([*self._also, *self.names()])
        if "{names}" in template:
            opening = template.format(kind=self.kind, name=repr(name), names=names)
            return f"{opening}{self._hint(name)}{self._fix}"
        opening = template.format(kind=self.kind, name=repr(name))
        return f"{opening}{self.choices(name)}{self._fix}"

    def choices(self, name: object) -> str:
        """ "; valid: a, b; did you mean 'a'?" for an unknown `name`."""
        return f"; {self._listed}: {', '.join([*self._also, *self.names()])}{self._hint(name)}"

    def _hint(self, name: object) -> str:
        close = difflib.get_close_matches(str(name), list(self._entries), n=1)
        return f"; did you mean {close[0]!r}?" if close else ""

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def values(self) -> list[T]:
        """Entries in registration order (the order `auto` choices try them in)."""
        return list(self._entries.values())

    def items(self) -> list[tuple[str, T]]:
        return list(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        """Names in registration order."""
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"


def _describe(entry: object) -> str:
    """A function or class by its qualified name, anything else by str()."""
    qualname = getattr(entry, "__qualname__", None)
    if isinstance(qualname, str):
        return f"{getattr(entry, '__module__', '?')}.{qualname}"
    return str(entry)
