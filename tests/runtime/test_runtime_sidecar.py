from __future__ import annotations

import hashlib
import json
import os
import re

import pytest
from runtime_helpers import make_artifact

from runtime.fileio import file_sha256
from runtime.sidecar import (
    ArtifactHashError,
    BatchRange,
    Sidecar,
    SidecarError,
    SidecarNotFoundError,
    read_sidecar,
    sidecar_path,
)


def _edit(artifact, change):
    path = sidecar_path(artifact)
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_sidecar_path_keeps_the_full_artifact_name(tmp_path):
    assert sidecar_path(tmp_path / "student.onnx").name == "student.onnx.json"
    assert sidecar_path(tmp_path / "student_fp16.engine").name == "student_fp16.engine.json"


def test_round_trip_equals_and_records_the_hash(tmp_path):
    art = make_artifact(tmp_path)
    sc = read_sidecar(art)
    assert sc.sha256 == hashlib.sha256(art.read_bytes()).hexdigest()
    assert sc.artifact == "model.onnx" and sc.format == "onnx"
    assert Sidecar.from_dict(json.loads(json.dumps(sc.to_dict()))) == sc
    assert [o.name for o in sc.outputs] == ["det", "drivable", "lane"]
    assert sc.input.shape == (-1, 3, 32, 64)


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (lambda d: d["det"].pop("iou_thres"), "det.iou_thres"),
        (lambda d: d.pop("preprocess"), "preprocess"),
        (lambda d: d["input"].update(shape="abc"), "input.shape"),
        (lambda d: d["batch"].update(max=2.5), "batch.max"),
        (lambda d: d["preprocess"].update(letterbox=1), "preprocess.letterbox"),
        (lambda d: d["outputs"][1].update(dtype=None), "outputs[1].dtype"),
        (lambda d: d["seg"].update(output="softmax"), "seg.output"),
        (lambda d: d.update(colour="RGB"), "colour"),
        (lambda d: d.update(schema_version=2), "schema_version"),
    ],
)
def test_invalid_sidecar_names_the_key(tmp_path, change, key):
    art = make_artifact(tmp_path)
    _edit(art, change)
    with pytest.raises(SidecarError, match=re.escape(f"'{key}'")):
        read_sidecar(art)


def test_cross_field_rules(tmp_path):
    art = make_artifact(tmp_path)
    _edit(art, lambda d: d["preprocess"].update(input_hw=[64, 64]))
    with pytest.raises(SidecarError, match="input_hw"):
        read_sidecar(art)
    sc = read_sidecar(make_artifact(tmp_path, "b.onnx"))
    with pytest.raises(SidecarError, match="min <= opt <= max"):
        Sidecar(**{**sc.__dict__, "batch": BatchRange(4, 2, 8)})
    with pytest.raises(SidecarError, match="tensorrt"):
        Sidecar(**{**sc.__dict__, "format": "engine"})


def test_hash_mismatch_says_what_to_do(tmp_path):
    art = make_artifact(tmp_path)
    with open(art, "ab") as f:
        f.write(b"\0")
    with pytest.raises(ArtifactHashError) as e:
        read_sidecar(art)
    msg = str(e.value)
    assert file_sha256(art) in msg and "--no-verify-hash" in msg and "re-export" in msg
    assert read_sidecar(art, verify_hash=False).artifact == "model.onnx"


def test_missing_and_broken_sidecar(tmp_path):
    art = make_artifact(tmp_path)
    sidecar_path(art).write_text("{not json")
    with pytest.raises(SidecarError, match="not valid JSON"):
        read_sidecar(art)
    sidecar_path(art).unlink()
    with pytest.raises(SidecarNotFoundError, match="model.onnx.json"):
        read_sidecar(art)


def test_chunked_hash_and_atomic_write(tmp_path):
    big = tmp_path / "big.bin"
    data = os.urandom(3 * (1 << 20) + 17)
    big.write_bytes(data)
    assert file_sha256(big) == hashlib.sha256(data).hexdigest()
    art = make_artifact(tmp_path)
    read_sidecar(art).write(tmp_path / "copy.json")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "copy.json").stat().st_mode & 0o777 == 0o666 & ~umask
