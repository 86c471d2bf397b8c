"""INT8 engines through the one builder (`runtime.tensorrt`) and the TensorRT fake: the Q/DQ
ONNX with INT8 + FP16 flags (10.x) or strongly typed (11.x), the DLA build from the FP32 ONNX +
the calibration cache (10.x), what is refused before building, the sidecar, the CLI, and the
runtime running the engine. The fake runs the ONNX the engine was built from in ONNX Runtime, so
this checks our logic and plumbing, never TensorRT's INT8 numerics (test_tensorrt_gpu.py and
`make gpu-check` do that on a GPU)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from runtime_helpers import install_fake_tensorrt, make_fake_tensorrt

from runtime import load_artifact
from runtime.fileio import file_sha256
from runtime.sidecar import BatchRange, read_sidecar, sidecar_path
from runtime.tensorrt import calibration as tb  # the module whose header writer is patched
from runtime.tensorrt.builder import build_serialized_engine
from runtime.tensorrt.calibration import write_calibration_cache
from runtime.tensorrt.cli import main as trt_build_main
from runtime.tensorrt.engine_sidecar import write_engine_sidecar
from runtime.tensorrt.errors import EngineBuildError
from runtime.testing import (
    StandinConfig,
    build_standin_int8,
    build_standin_onnx,
    standin_int8_sidecar,
    standin_sidecar,
)

HW = (32, 64)
T10, T11 = "10.3.0.30", "11.1.0.106"
DYNAMIC = {"images": ((1, 3, *HW), (2, 3, *HW), (4, 3, *HW))}
STATIC = {"images": ((2, 3, *HW),) * 3}


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """A stand-in export folder as mtc-export --int8 leaves it: x.onnx, x_int8.onnx (Q/DQ),
    x_int8.calib (the same ranges), and their sidecars (x_int8's with the int8 block)."""
    folder = tmp_path_factory.mktemp("int8")
    cfg = StandinConfig(input_hw=HW, conv_channels=8, batch=BatchRange(1, 2, 4))
    fp32 = build_standin_onnx(folder / "x.onnx", cfg)
    standin_sidecar(fp32, cfg)
    int8, amax = build_standin_int8(fp32, cfg)
    standin_int8_sidecar(int8, cfg, calib_cache="x_int8.calib")
    write_calibration_cache(folder / "x_int8.calib", amax, trt_version="10.3.0")
    return folder, amax


def _calls(trt, name):
    return [v for k, v in trt.calls if k == name]


def _build(trt, onnx_path: Path, shapes=DYNAMIC, **kw):
    return build_serialized_engine(
        onnx_path.read_bytes(), precision="int8", input_shapes=shapes, trt=trt, gpu="G", **kw
    )


def test_trt10_builds_the_qdq_onnx_weakly_typed_with_int8_and_fp16(export):
    folder, _ = export
    trt = make_fake_tensorrt(T10)
    plan, info = _build(trt, folder / "x_int8.onnx")
    header = json.loads(plan)
    assert _calls(trt, "create_network") == [0]  # weakly typed
    assert _calls(trt, "set_flag") == [trt.BuilderFlag.INT8, trt.BuilderFlag.FP16]
    assert header["builder_flags"] == ["FP16", "INT8"] and not header["strongly_typed"]
    assert header["int8"] == {"mode": "explicit_qdq", "strongly_typed": False}
    assert info.int8_path == "qdq_int8_fp16_flags" and info.fp16_path is None
    assert info.build_flags == ("workspace=1024MiB", "opt_level=3", "profile=1/2/4", "INT8", "FP16")
    assert _calls(trt, "int8_calibrator") == []  # the Q/DQ pairs carry the scales


def test_trt11_builds_the_qdq_onnx_strongly_typed_without_flags(export):
    folder, _ = export
    trt = make_fake_tensorrt(T11)
    assert not hasattr(trt.BuilderFlag, "INT8") and not hasattr(trt, "IInt8EntropyCalibrator2")
    plan, info = _build(trt, folder / "x_int8.onnx")
    assert _calls(trt, "create_network") == [
        1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    ]
    assert _calls(trt, "set_flag") == [] and json.loads(plan)["strongly_typed"]
    assert info.int8_path == "qdq_strongly_typed" and info.build_flags[-1] == "STRONGLY_TYPED"


@pytest.mark.parametrize("version", [T10, T11])
def test_int8_from_an_onnx_without_qdq_is_refused_before_building(export, version):
    folder, _ = export
    trt = make_fake_tensorrt(version)
    with pytest.raises(EngineBuildError, match="has no QuantizeLinear/DequantizeLinear; pass"):
        _build(trt, folder / "x.onnx")
    assert _calls(trt, "build_serialized_network") == []


def test_no_fast_int8_is_refused(export):
    folder, _ = export
    trt = make_fake_tensorrt(T10, fast_int8=False)
    with pytest.raises(EngineBuildError, match="this GPU has no fast INT8; use --engine fp16"):
        _build(trt, folder / "x_int8.onnx")


def test_the_fake_refuses_precision_flags_on_a_strongly_typed_network(export):
    """What our 11.x path relies on not doing: the fake fails it as TensorRT does."""
    folder, _ = export
    trt = make_fake_tensorrt(T10)
    builder = trt.Builder(trt.Logger())
    net = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    trt.OnnxParser(net, None).parse((folder / "x_int8.onnx").read_bytes())
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.INT8)
    assert builder.build_serialized_network(net, config) is None
    assert trt.log[-1] == (
        "ERROR",
        "BuilderFlag::kINT8 is not allowed with a strongly typed network",
    )


# -- DLA: implicit quantisation from the FP32 ONNX and the calibration cache (10.x) ---------------
def test_dla_builds_the_fp32_onnx_with_the_cache_and_reports_gpu_layers(export):
    folder, amax = export
    trt = make_fake_tensorrt(T10, dla_cores=2)
    cache = (folder / "x_int8.calib").read_bytes()
    plan, info = _build(trt, folder / "x.onnx", STATIC, dla_core=1, calib_cache=cache)
    header = json.loads(plan)
    flags = {trt.BuilderFlag.INT8, trt.BuilderFlag.FP16, trt.BuilderFlag.GPU_FALLBACK}
    assert set(_calls(trt, "set_flag")) == flags
    assert _calls(trt, "int8_calibrator") == ["CacheOnlyCalibrator"]
    assert _calls(trt, "read_calibration_cache") == [cache]  # same version: handed over as is
    assert header["int8"]["mode"] == "implicit" and header["int8"]["scales"] == len(amax)
    assert info.int8_path == "implicit_calib_cache" and info.dla_core == 1
    assert f"calib_cache=EntropyCalibration2({len(amax)} tensors)" in info.build_flags
    model = onnx.load(str(folder / "x.onnx"))
    off_dla = tuple(
        f"node_of_{n.output[0]}" for n in model.graph.node if n.op_type in ("Cast", "Identity")
    )
    assert off_dla and info.dla_gpu_layers == off_dla == tuple(header["dla"]["gpu_layers"])
    assert info.sidecar_section()["dla_gpu_layers"] == list(off_dla)


def test_dla_rewrites_the_cache_header_for_the_installed_tensorrt(export, tmp_path):
    folder, amax = export
    old = write_calibration_cache(tmp_path / "old.calib", amax, trt_version="8.6.1")
    assert old.read_text().startswith("TRT-8601-")
    trt = make_fake_tensorrt(T10, dla_cores=1)
    _build(trt, folder / "x.onnx", STATIC, dla_core=0, calib_cache=old.read_bytes())
    [handed] = _calls(trt, "read_calibration_cache")
    assert handed.startswith(b"TRT-100300-EntropyCalibration2\n")
    assert handed.split(b"\n", 1)[1] == old.read_bytes().split(b"\n", 1)[1]  # same scales


def test_a_cache_tensorrt_does_not_take_fails_the_build(export, monkeypatch):
    folder, _ = export
    monkeypatch.setattr(tb, "trt_version_number", lambda v: 1)  # a header TensorRT rejects
    trt = make_fake_tensorrt(T10, dla_cores=1)
    cache = (folder / "x_int8.calib").read_bytes()
    with pytest.raises(EngineBuildError, match="did not take the calibration cache"):
        _build(trt, folder / "x.onnx", STATIC, dla_core=0, calib_cache=cache)


@pytest.mark.parametrize(
    "version,cores,shapes,source,cache,message",
    [
        (
            T10,
            2,
            DYNAMIC,
            "x.onnx",
            True,
            "DLA runs static shapes only, but the profile of "
            "'images' goes from 1x3x32x64 to 4x3x32x64; export with one batch size",
        ),
        (
            T11,
            2,
            STATIC,
            "x.onnx",
            True,
            "needs implicit quantisation .* which TensorRT "
            "11.1.0.106 removed; build the DLA engine with TensorRT 10.x",
        ),
        (T10, 0, STATIC, "x.onnx", True, "--dla-core 0 asked for, but this device has 0 DLA"),
        (T10, 2, STATIC, "x.onnx", False, "needs the calibration cache .*; pass --calib PATH"),
        (T10, 2, STATIC, "x_int8.onnx", True, "this ONNX has 15 Q/DQ layers; pass <name>.onnx"),
    ],
)
def test_dla_refusals_come_before_the_build(export, version, cores, shapes, source, cache, message):
    folder, _ = export
    trt = make_fake_tensorrt(version, dla_cores=cores)
    data = (folder / "x_int8.calib").read_bytes() if cache else None
    with pytest.raises(EngineBuildError, match=message) as err:
        _build(trt, folder / source, shapes, dla_core=0, calib_cache=data)
    assert "\n" not in str(err.value)
    assert _calls(trt, "build_serialized_network") == []


def test_fp16_dla_builds_report_gpu_layers_and_refuse_dynamic_shapes(export):
    folder, _ = export
    trt = make_fake_tensorrt(T10, dla_cores=1)
    onnx_bytes = (folder / "x.onnx").read_bytes()
    _, info = build_serialized_engine(
        onnx_bytes, precision="fp16", input_shapes=STATIC, trt=trt, gpu="G", dla_core=0
    )
    assert info.int8_path is None and info.dla_gpu_layers and "GPU_FALLBACK" in info.build_flags
    with pytest.raises(EngineBuildError, match="DLA runs static shapes only"):
        build_serialized_engine(
            onnx_bytes, precision="fp16", input_shapes=DYNAMIC, trt=trt, gpu="G", dla_core=0
        )


# -- sidecar, CLI, runtime --------------------------------------------------------------------------
def _cli(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = trt_build_main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def test_cli_builds_the_qdq_engine_and_its_sidecar_then_the_runtime_runs_it(
    export, monkeypatch, tmp_path
):
    folder, _ = export
    install_fake_tensorrt(monkeypatch, T10)
    rc, out, err = _cli(
        [
            folder / "x_int8.onnx",
            "--precision",
            "int8",
            "--engine",
            tmp_path / "x_int8.engine",
            "--cache-dir",
            tmp_path / "tc",
        ]
    )
    assert rc == 0, err
    engine = tmp_path / "x_int8.engine"
    assert out.strip() == f"wrote {engine} and {engine}.json"
    raw = json.loads(sidecar_path(engine).read_text())
    onnx_side = json.loads(sidecar_path(folder / "x_int8.onnx").read_text())
    assert raw["precision"] == "int8" and raw["int8"] == onnx_side["int8"]
    assert raw["tensorrt"]["int8_path"] == "qdq_int8_fp16_flags"
    assert raw["tensorrt"]["dla_gpu_layers"] is None
    sc = read_sidecar(engine)  # schema-valid, hash matches
    assert sc.int8 is not None and sc.int8.calib_cache == "x_int8.calib"
    x = np.random.default_rng(3).normal(0, 1, (3, 3, *HW)).astype(np.float32)
    with load_artifact(engine) as eng, load_artifact(folder / "x_int8.onnx") as ref:
        assert eng.name == "tensorrt" and ref.name == "onnxruntime"
        got, want = eng.infer(x), ref.infer(x)
    assert set(got) == set(want)
    for name in want:  # the fake runs the Q/DQ ONNX in ONNX Runtime: equal by construction
        np.testing.assert_array_equal(got[name], want[name])


def test_cli_dla_build_takes_the_cache_the_int8_sidecar_names(export, monkeypatch, tmp_path):
    folder, amax = export
    fake = install_fake_tensorrt(monkeypatch, T10, dla_cores=2)
    static = [f"--{k}-shapes=images:2x3x32x64" for k in ("min", "opt", "max")]
    engine = tmp_path / "x_int8.engine"
    rc, _, err = _cli(
        [
            folder / "x.onnx",
            "--precision",
            "int8",
            "--dla",
            "1",
            *static,
            "--engine",
            engine,
            "--cache-dir",
            tmp_path / "tc",
        ]
    )
    assert rc == 0, err
    assert [v for k, v in fake.trt.calls if k == "read_calibration_cache"] == [
        (folder / "x_int8.calib").read_bytes()
    ]
    sc = read_sidecar(engine)
    assert sc.precision == "int8" and sc.int8 is not None and sc.int8.calib_cache == "x_int8.calib"
    assert sc.tensorrt.int8_path == "implicit_calib_cache" and sc.tensorrt.dla_core == 1
    assert sc.tensorrt.dla_gpu_layers and sc.batch == BatchRange(2, 2, 2)
    assert sc.source_onnx_sha256 == file_sha256(folder / "x.onnx")


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--dla", "0"], "DLA runs static shapes only"),  # the sidecar's batch range 1..4
        (["--calib", "x_int8.calib"], "--calib is for the DLA build"),
        (
            [
                "--dla",
                "0",
                "--min-shapes=images:2x3x32x64",
                "--opt-shapes=images:2x3x32x64",
                "--max-shapes=images:2x3x32x64",
                "--calib",
                "none.calib",
            ],
            "none.calib does not exist",
        ),
    ],
)
def test_cli_int8_mistakes_are_one_line_and_write_nothing(
    export, monkeypatch, tmp_path, extra, message
):
    folder, _ = export
    install_fake_tensorrt(monkeypatch, T10, dla_cores=1)
    monkeypatch.chdir(folder)
    engine = tmp_path / "e.engine"
    rc, out, err = _cli(["x.onnx", "--precision", "int8", "--engine", engine, *extra])
    assert rc == 2 and out == "" and err.count("\n") == 1 and message in err
    assert not engine.exists()


def test_int8_engine_sidecar_without_an_int8_block_is_refused(export, tmp_path):
    folder, _ = export
    trt = make_fake_tensorrt(T10)
    plan, info = _build(trt, folder / "x_int8.onnx")
    engine = tmp_path / "x_int8.engine"
    engine.write_bytes(plan)
    with pytest.raises(EngineBuildError, match="sidecar of x.onnx has no 'int8' block"):
        write_engine_sidecar(
            engine,
            folder / "x.onnx",
            precision="int8",
            info=info,
            batch={"min": 1, "opt": 2, "max": 4},
        )
    assert not sidecar_path(engine).exists()
