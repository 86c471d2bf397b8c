"""Property tests: whatever bytes or JSON a sidecar holds, reading it gives a SidecarError (a
named, one-line error) or a valid Sidecar, never another exception."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from runtime_helpers import make_artifact

from runtime.sidecar import Sidecar, SidecarError, read_sidecar, sidecar_path

FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> tuple[Path, dict]:
    art = make_artifact(tmp_path_factory.mktemp("sc"))
    return art, json.loads(sidecar_path(art).read_text())


def _paths(d: dict, prefix: tuple = ()) -> list[tuple]:
    out = []
    for k, v in d.items():
        out.append((*prefix, k))
        if isinstance(v, dict):
            out += _paths(v, (*prefix, k))
    return out


@FUZZ
@given(data=st.binary(max_size=400))
@example(data=b"[" * 100_000)  # nested beyond the JSON decoder's recursion limit
def test_any_bytes_give_a_named_error(good, tmp_path, data):
    art, _ = good
    target = tmp_path / "m.onnx"
    shutil.copy(art, target)
    sidecar_path(target).write_bytes(data)
    with pytest.raises(SidecarError):
        read_sidecar(target)


@FUZZ
@given(choice=st.integers(min_value=0), value=json_values, drop=st.booleans())
def test_any_value_at_any_key_gives_a_named_error_or_a_sidecar(good, choice, value, drop):
    _, base = good
    d = json.loads(json.dumps(base))
    keys = _paths(d)
    path = keys[choice % len(keys)]
    parent = d
    for k in path[:-1]:
        parent = parent[k]
    if drop:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    try:
        sc = Sidecar.from_dict(d)
    except SidecarError as e:
        assert str(e).strip()  # the CLI kernel prints it as one line
    else:
        assert isinstance(sc, Sidecar)


@FUZZ
@given(value=json_values)
def test_any_json_document_gives_a_named_error(good, tmp_path, value):
    art, _ = good
    target = tmp_path / "m.onnx"
    shutil.copy(art, target)
    sidecar_path(target).write_text(json.dumps(value))
    with pytest.raises(SidecarError):
        read_sidecar(target)


def test_a_huge_number_for_a_float_is_a_named_error(good):
    d = json.loads(json.dumps(good[1]))
    d["preprocess"]["mean"] = [10**400, 0.5, 0.5]
    with pytest.raises(SidecarError, match="preprocess.mean.*too large"):
        Sidecar.from_dict(d)
