"""The TensorRT fake behaves as TensorRT documents the parts we rely on, and `runtime.tensorrt`
(the one builder) reacts to them as it should. If the fake drifted from TensorRT, every CPU test of
the engine path would prove less: these pin it."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from runtime_helpers import (  # puts tests/fakes on the path
    FAKE_TRT_VERSION,
    FakeGpu,
    install_fake_tensorrt,
    install_fake_trt,
    make_fake_tensorrt,
)

from runtime import load_artifact
from runtime.backends.tensorrt import EngineIncompatibleError
from runtime.tensorrt.builder import build_serialized_engine
from runtime.tensorrt.device import timing_cache_file
from runtime.tensorrt.engine_sidecar import write_engine_sidecar
from runtime.tensorrt.errors import EngineBuildError
from runtime.testing import StandinConfig, build_standin_onnx, standin_sidecar

HW = (32, 64)
SHAPES = {"images": ((1, 3, *HW), (2, 3, *HW), (4, 3, *HW))}


def _onnx(tmp_path: Path, **kw) -> Path:
    cfg = StandinConfig(input_hw=HW, **kw)
    path = build_standin_onnx(tmp_path / "standin.onnx", cfg)
    standin_sidecar(path, cfg)
    return path


def _build(trt, onnx_path: Path, **kw):
    kw.setdefault("precision", "fp16")
    kw.setdefault("input_shapes", SHAPES)
    return build_serialized_engine(onnx_path.read_bytes(), trt=trt, gpu="Fake GPU", **kw)


def _engine(tmp_path: Path, trt, onnx_path: Path, **kw) -> Path:
    plan, info = _build(trt, onnx_path, **kw)
    path = tmp_path / "standin.engine"
    path.write_bytes(plan)
    batch = {"min": 1, "opt": 2, "max": 4}
    write_engine_sidecar(path, onnx_path, precision="fp16", info=info, batch=batch)
    return path


def _context(trt, plan: bytes):
    engine = trt.Runtime(trt.Logger()).deserialize_cuda_engine(plan)
    return engine, engine.create_execution_context()


@pytest.mark.parametrize("nms_in_graph", [False, True])
def test_engine_runs_its_source_onnx(tmp_path, monkeypatch, nms_in_graph):
    install_fake_trt(monkeypatch)
    src = _onnx(tmp_path, nms_in_graph=nms_in_graph)
    engine = _engine(tmp_path, make_fake_tensorrt(FAKE_TRT_VERSION), src)
    x = np.random.default_rng(0).standard_normal((3, 3, *HW)).astype(np.float32)
    with load_artifact(engine) as eng, load_artifact(src) as ref:
        got, want = eng.infer(x), ref.infer(x)
        names = eng.output_names
    assert names == tuple(want) and set(got) == set(want)
    for k in want:  # det [B, N, 6] float32, det_count [B] int32, masks uint8
        assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape
        np.testing.assert_array_equal(got[k], want[k])


def test_engine_from_another_tensorrt_or_compute_capability_is_refused(tmp_path, monkeypatch):
    src = _onnx(tmp_path)
    plan, _ = _build(make_fake_tensorrt("10.3.0"), src)
    newer = make_fake_tensorrt("10.4.0")
    assert newer.Runtime(newer.Logger()).deserialize_cuda_engine(plan) is None
    assert "expecting library version 10.4.0 got 10.3.0" in newer.log[-1][1]
    orin = make_fake_tensorrt("10.3.0", gpu=FakeGpu("Orin", (8, 7)))
    assert orin.Runtime(orin.Logger()).deserialize_cuda_engine(plan) is not None  # same SM
    assert orin.log[-1] == (
        "WARNING",
        "Using an engine plan file across different models of devices is not recommended",
    )
    hopper = make_fake_tensorrt("10.3.0", gpu=FakeGpu("H100", (9, 0)))
    assert hopper.Runtime(hopper.Logger()).deserialize_cuda_engine(plan) is None
    assert hopper.Runtime(hopper.Logger()).deserialize_cuda_engine(b"\x00not a plan") is None
    # Through the backend: a one-line error naming both sides, nothing leaked.
    fake = install_fake_tensorrt(monkeypatch, "10.3.0", gpu=FakeGpu("H100", (9, 0)))
    engine = _engine(tmp_path, make_fake_tensorrt("10.3.0"), src)
    with pytest.raises(
        EngineIncompatibleError, match="this machine has TensorRT 10.3.0 on GPU H100"
    ):
        load_artifact(engine)
    assert fake.memories[0].closed and fake.memories[0].device_bytes == {}


def test_input_shapes_outside_the_profile_are_refused(tmp_path):
    trt = make_fake_tensorrt(FAKE_TRT_VERSION)
    engine, ctx = _context(trt, _build(trt, _onnx(tmp_path))[0])
    assert engine.get_tensor_shape("images") == (-1, 3, *HW)
    assert engine.get_tensor_profile_shape("images", 0) == list(SHAPES["images"])
    assert not ctx.set_input_shape("images", (5, 3, *HW))  # above max
    assert not ctx.set_input_shape("images", (2, 3, 16, 64))  # a static dim changed
    assert ctx.set_input_shape("images", (3, 3, *HW))
    assert ctx.get_tensor_shape("det") == (3, 6, 6) and ctx.get_tensor_shape("lane") == (3, *HW)
    assert not ctx.execute_async_v3(0)  # no addresses yet
    assert "addresses for ['images', 'det', 'drivable', 'lane']" in trt.log[-1][1]


def test_dynamic_input_needs_a_valid_profile(tmp_path):
    trt = make_fake_tensorrt(FAKE_TRT_VERSION)
    with pytest.raises(EngineBuildError, match="rejected the optimisation profile"):
        _build(
            trt, _onnx(tmp_path), input_shapes={"images": ((4, 3, *HW), (2, 3, *HW), (1, 3, *HW))}
        )
    with pytest.raises(EngineBuildError, match=r"build_serialized_network returned None on Fake"):
        _build(trt, _onnx(tmp_path), input_shapes={})
    assert "dynamic inputs ['images'] but no optimization profile" in trt.log[-1][1]
    with pytest.raises(EngineBuildError, match=r"returned None"):
        _build(trt, _onnx(tmp_path), input_shapes={"images": ((1, 3, 16, 16),) * 3})
    assert "does not match its dims (-1, 3, 32, 64)" in trt.log[-1][1]


def test_fp16_flag_and_strong_typing_follow_the_tensorrt_line(tmp_path):
    src = _onnx(tmp_path)
    trt10 = make_fake_tensorrt("10.3.0")
    builder = trt10.Builder(trt10.Logger())
    strongly = 1 << int(trt10.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(strongly)
    assert trt10.OnnxParser(network, trt10.Logger()).parse(src.read_bytes())
    config = builder.create_builder_config()
    config.set_flag(trt10.BuilderFlag.FP16)
    assert builder.build_serialized_network(network, config) is None  # 10.x: not allowed together
    assert "kFP16 is not allowed with a strongly typed network" in trt10.log[-1][1]
    _, info10 = _build(trt10, src)
    assert (info10.fp16_path, info10.build_flags[2]) == ("builder_flag", "FP16")

    trt11 = make_fake_tensorrt("11.1.0")
    assert not hasattr(trt11.BuilderFlag, "FP16")
    assert not hasattr(trt11.Builder(trt11.Logger()), "platform_has_fast_fp16")
    # 11.x removed implicit quantisation: no INT8 flag, no calibrators, no int8_calibrator
    assert not hasattr(trt11.BuilderFlag, "INT8") and not hasattr(trt11, "IInt8EntropyCalibrator2")
    with pytest.raises(AttributeError, match="int8_calibrator"):
        trt11.Builder(trt11.Logger()).create_builder_config().int8_calibrator = object()
    assert hasattr(trt10.BuilderFlag, "INT8") and hasattr(trt10, "IInt8EntropyCalibrator2")
    plan, info11 = _build(trt11, src)
    assert info11.fp16_path == "strongly_typed_fp16_onnx" and "STRONGLY_TYPED" in info11.build_flags
    assert trt11.builds[-1]["strongly_typed"] and trt11.builds[-1]["builder_flags"] == []
    with pytest.raises(
        EngineBuildError, match="has no FP16 builder flag: re-export with --trt-target 11"
    ):
        _build(trt11, src, fp16_path="builder_flag")
    with pytest.raises(EngineBuildError, match="precision 'int4' is not one of fp16, fp32, int8"):
        _build(trt11, src, precision="int4")


def test_build_serialized_engine_for_latency_probes(tmp_path, monkeypatch):
    """The signature the latency-table probes call, with the timing cache they keep per device."""
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_tensorrt("10.3.0"))
    cache = timing_cache_file(tmp_path, "Fake GPU", "10.3.0")
    plan, info = build_serialized_engine(
        _onnx(tmp_path).read_bytes(),
        precision="fp32",
        input_shapes={"images": ((1, 3, *HW),) * 3},
        workspace_mib=256,
        opt_level=1,
        timing_cache=cache,
    )
    assert isinstance(plan, bytes) and cache.is_file()
    assert info.build_flags == ("workspace=256MiB", "opt_level=1", "profile=1/1/1")
    assert (info.version, info.fp16_path, info.timing_cache) == ("10.3.0", None, str(cache))
    assert sys.modules["tensorrt"].calls[-1] == ("build_serialized_network", 0)
