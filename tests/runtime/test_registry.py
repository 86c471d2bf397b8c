"""The one strict registry every extensible table uses: duplicates refused naming both,
unknown names listing the valid ones with a close match, in the registry's own error class."""

from __future__ import annotations

import pytest

from runtime.errors import MtcError
from runtime.registry import Registry, RegistryError


class NoSuchThing(MtcError):
    pass


class TakenThing(MtcError):
    pass


def first() -> None: ...


def second() -> None: ...


def test_register_by_call_and_decorator_and_iterate_in_order():
    reg: Registry = Registry("thing")
    assert reg.register("b", first) is first

    @reg.register("a")
    def a() -> None: ...

    assert reg.names() == ["a", "b"] and list(reg) == ["b", "a"]  # sorted vs registration order
    assert reg.values() == [first, a] and reg.get("a") is a and "a" in reg and len(reg) == 2


def test_duplicate_names_both_claimants_and_registers_nothing():
    reg: Registry = Registry("thing", NoSuchThing, TakenThing)
    reg.register("x", first)
    with pytest.raises(TakenThing, match=r"thing 'x' is already registered by .*\.first; .*second"):
        reg.register("x", second)
    assert reg.get("x") is first


def test_unknown_lists_valid_names_and_a_close_match():
    reg: Registry = Registry("thing", NoSuchThing, also=("auto",), fix=" (see the docs)")
    reg.register("alpha", first)
    reg.register("beta", second)
    with pytest.raises(NoSuchThing) as e:
        reg.get("alpah")
    assert str(e.value) == (
        "unknown thing 'alpah'; valid: auto, alpha, beta; did you mean 'alpha'? (see the docs)"
    )
    assert reg.unknown_message("zzz", lead="no {kind} {name}") == (
        "no thing 'zzz'; valid: auto, alpha, beta (see the docs)"
    )


def test_names_can_sit_inside_the_message():
    reg: Registry = Registry("thing", NoSuchThing, unknown="{kind} {name} is not one of {names}")
    reg.register("alpha", first)
    reg.register("beta", second)
    assert (
        reg.unknown_message("alpah")
        == "thing 'alpah' is not one of alpha, beta; did you mean 'alpha'?"
    )
    assert reg.unknown_message("zzz") == "thing 'zzz' is not one of alpha, beta"


def test_unregister_and_default_error():
    reg: Registry = Registry("thing")
    reg.register("x", first)
    assert reg.unregister("x") is first and "x" not in reg
    with pytest.raises(RegistryError, match="unknown thing 'x'"):
        reg.unregister("x")
