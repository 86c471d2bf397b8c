"""`--input uint8`: the graph takes letterboxed uint8 NHWC BGR frames and does the cast, channel
order, normalisation and layout itself; its outputs equal the float-input export's, and the
runtime feeds it frames that are only letterboxed."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import small_config

from export import export_model
from export.config import ExportConfigError
from runtime import load_artifact, run
from runtime.preprocess import Preprocessor
from runtime.sidecar import read_sidecar, sidecar_path


@pytest.fixture(scope="module")
def pair(tiny_ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("u8")
    f = export_model(
        tiny_ckpt, small_config(out / "f", tensorrt={"engine": "none"}, half={"enabled": False})
    )
    u = export_model(
        tiny_ckpt,
        small_config(
            out / "u",
            tensorrt={"engine": "none"},
            half={"enabled": False},
            input={"dtype": "uint8"},
        ),
    )
    del f, u
    return out / "f" / "student.onnx", out / "u" / "student.onnx"


def _frames(n, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = (72, 128) if i % 2 else (150, 200)  # two sizes: both letterboxed
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        img[h // 2 :] = np.clip(img[h // 2 :].astype(int) + 60, 0, 255).astype(np.uint8)
        out.append(img)
    return out


def test_sidecar_says_uint8_nhwc(pair):
    sc = read_sidecar(pair[1])
    assert (sc.input.dtype, sc.input.layout, sc.input.shape) == ("uint8", "NHWC", (-1, 64, 128, 3))
    assert read_sidecar(pair[0]).input.layout == "NCHW"


def test_outputs_equal_the_float_export(pair):
    f_path, u_path = pair
    frames = _frames(4)
    with load_artifact(f_path) as fb, load_artifact(u_path) as ub:
        fp = Preprocessor(fb.sidecar.preprocess, 4)
        up = Preprocessor(ub.sidecar.preprocess, 4, "uint8", layout="NHWC")
        fbatch, _ = fp(frames)
        ubatch, _ = up(frames)
        assert ubatch.dtype == np.uint8 and ubatch.shape == (4, 64, 128, 3)
        ref, got = fb.infer(fbatch), ub.infer(ubatch)
    assert set(ref) == set(got)
    for key in ref:
        if ref[key].dtype.kind in "iu":
            np.testing.assert_array_equal(got[key], ref[key])
        else:
            np.testing.assert_allclose(got[key], ref[key], rtol=1e-4, atol=1e-4)


def test_run_results_equal_and_preprocess_is_only_the_letterbox(pair, tmp_path):
    frames = _frames(6, seed=1)
    a = run(pair[0], frames, batch=2, progress=False, warmup=0)
    b = run(pair[1], frames, batch=2, progress=False, warmup=0)
    for x, y in zip(a.results, b.results):
        np.testing.assert_allclose(x.boxes, y.boxes, rtol=1e-4, atol=1e-3)
        np.testing.assert_array_equal(x.drivable, y.drivable)
        np.testing.assert_array_equal(x.lane, y.lane)


def test_uint8_input_with_an_engine_is_refused_in_one_line(tmp_path):
    with pytest.raises(ExportConfigError, match="--input uint8 with --engine fp16"):
        small_config(tmp_path, input={"dtype": "uint8"})


def test_cli_flag_writes_the_uint8_sidecar(tiny_ckpt, tmp_path):
    from export.cli import main

    out = tmp_path / "cli"
    argv = [
        str(tiny_ckpt),
        "-o",
        str(out),
        "--engine",
        "none",
        "--no-fp16-onnx",
        "--input",
        "uint8",
    ]
    assert main([*argv, "--max-batch", "2"]) == 0
    side = json.loads(sidecar_path(out / "student.onnx").read_text())
    assert side["input"]["dtype"] == "uint8" and side["input"]["layout"] == "NHWC"


def test_a_sidecar_claiming_float_nhwc_is_refused(pair, tmp_path):
    import shutil

    from runtime.sidecar import SidecarError

    art = tmp_path / "student.onnx"
    shutil.copy(pair[1], art)
    data = json.loads(sidecar_path(pair[1]).read_text())
    data["input"]["dtype"] = "float32"
    sidecar_path(art).write_text(json.dumps(data))
    with pytest.raises(SidecarError, match="NHWC, which the runtime feeds uint8 frames only"):
        read_sidecar(art)
