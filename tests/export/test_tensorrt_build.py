"""Our TensorRT build logic (export/tensorrt/build.py over runtime/tensorrt/builder.py), driven through
the TensorRT fake (tests/fakes: the real API's names and call semantics; it records every call).
The end-to-end engine path is test_tensorrt_engine_path.py; real builds: test_gpu.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper
from tensorrt_fake import make_fake_tensorrt

from export.errors import EngineBuildError, TensorRTUnavailableError
from export.tensorrt.build import EngineBuildConfig, EngineFromOnnx, import_tensorrt
from runtime.tensorrt.builder import fp16_path_for
from runtime.tensorrt.device import installed_version, timing_cache_file


def _onnx_bytes(elem: int = TensorProto.FLOAT) -> bytes:
    x = helper.make_tensor_value_info("images", elem, ["batch", 3, 64, 128])
    y = helper.make_tensor_value_info("y", elem, ["batch", 3, 64, 128])
    g = helper.make_graph([helper.make_node("Relu", ["images"], ["y"])], "g", [x], [y])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


FP32, FP16 = _onnx_bytes(), _onnx_bytes(TensorProto.FLOAT16)


def _cfg(tmp_path: Path, precision: str = "fp16", dla: int | None = None) -> EngineBuildConfig:
    lo, opt, hi = (2, 2, 2) if dla is not None else (1, 2, 8)  # DLA: static shapes only
    return EngineBuildConfig(
        precision, "images", (3, 64, 128), lo, opt, hi, 1024, 4, tmp_path / "cache", dla
    )


def _install(monkeypatch, **kw):
    trt = make_fake_tensorrt(**kw)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return trt


def _build(tmp_path, precision="fp16", fp16=FP16, dla=None):
    return EngineFromOnnx(
        lambda: FP32,
        (lambda: fp16) if fp16 else None,
        _cfg(tmp_path, precision, dla),
        gpu_name=lambda: "NVIDIA Orin (nvgpu)",
    )()


def _calls(trt, name):
    return [v for k, v in trt.calls if k == name]


def test_trt10_fp16_uses_builder_flag_on_fp32_onnx(monkeypatch, tmp_path):
    trt = _install(monkeypatch, version="10.3.0.30")
    eng = _build(tmp_path)
    assert eng.fp16_path == "builder_flag" and eng.source == "fp32_onnx"
    assert _calls(trt, "create_network") == [0]  # weakly typed, explicit batch by default
    assert trt.BuilderFlag.FP16 in _calls(trt, "set_flag")
    assert _calls(trt, "parsed_dtypes") == [[]] and len(_calls(trt, "parse")) == 1
    plan = json.loads(eng.plan)
    assert plan["fake"] and plan["builder_flags"] == ["FP16"]
    assert eng.build_flags == ("workspace=1024MiB", "opt_level=4", "FP16", "profile=1/2/8")
    assert _calls(trt, "set_memory_pool_limit") == [(trt.MemoryPoolType.WORKSPACE, 1024 << 20)]


def test_trt11_fp16_is_strongly_typed_from_the_fp16_onnx(monkeypatch, tmp_path):
    trt = _install(monkeypatch, version="11.1.0.106")
    assert not hasattr(trt.BuilderFlag, "FP16")
    eng = _build(tmp_path)
    assert eng.fp16_path == "strongly_typed_fp16_onnx" and eng.source == "fp16_onnx"
    assert _calls(trt, "create_network") == [
        1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    ]
    assert _calls(trt, "set_flag") == [] and "STRONGLY_TYPED" in eng.build_flags
    assert fp16_path_for(trt) == "strongly_typed_fp16_onnx"


def test_trt11_fp16_without_fp16_onnx_fails_loudly(monkeypatch, tmp_path):
    trt = _install(monkeypatch, version="11.0.0")
    with pytest.raises(EngineBuildError, match="builds FP16 only from an FP16 ONNX"):
        _build(tmp_path, fp16=None)
    assert _calls(trt, "build_serialized_network") == []


def test_no_fast_fp16_fails_instead_of_building_fp32(monkeypatch, tmp_path):
    trt = _install(monkeypatch, version="10.3.0", fast_fp16=False)
    with pytest.raises(EngineBuildError, match="this GPU has no fast FP16; use --engine fp32"):
        _build(tmp_path)
    assert _calls(trt, "build_serialized_network") == []


def test_fp32_sets_no_precision_flag(monkeypatch, tmp_path):
    trt = _install(monkeypatch, version="10.3.0")
    eng = _build(tmp_path, precision="fp32")
    assert eng.fp16_path is None and _calls(trt, "set_flag") == []
    assert _calls(trt, "create_network") == [0]


def test_profile_shapes_are_min_opt_max_of_the_batch_range(monkeypatch, tmp_path):
    trt = _install(monkeypatch)
    _build(tmp_path)
    [profile] = _calls(trt, "add_optimization_profile")
    assert profile == {"images": ((1, 3, 64, 128), (2, 3, 64, 128), (8, 3, 64, 128))}


def test_timing_cache_per_gpu_and_version_loaded_and_saved(monkeypatch, tmp_path):
    trt = _install(monkeypatch, version="10.3.0.30")
    first = _build(tmp_path)
    path = tmp_path / "cache" / "timing_nvidia-orin-nvgpu_trt10.3.0.30.cache"
    assert first.timing_cache == str(path) and json.loads(path.read_bytes()) == {"builds": 1}
    _build(tmp_path)
    loads = _calls(trt, "create_timing_cache")
    assert loads[0] == b"" and json.loads(loads[1]) == {"builds": 1}  # second build reuses it
    assert json.loads(path.read_bytes()) == {"builds": 2}
    assert _calls(trt, "set_timing_cache") == [False, False]  # ignore_mismatch=False
    assert timing_cache_file(Path("/c"), "Tesla T4", "11.1") == Path(
        "/c/timing_tesla-t4_trt11.1.cache"
    )
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [path.name]  # no temp files


def test_corrupt_timing_cache_is_an_error_naming_the_file(monkeypatch, tmp_path):
    _install(monkeypatch, version="10.3.0.30")
    bad = tmp_path / "cache" / "timing_nvidia-orin-nvgpu_trt10.3.0.30.cache"
    bad.parent.mkdir()
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(EngineBuildError, match=f"rejected the timing cache {bad}"):
        _build(tmp_path)


def test_parse_failure_lists_the_parser_errors(monkeypatch, tmp_path):
    errors = (
        ("UNSUPPORTED_NODE", "No importer registered for op: Det", "det_1", "Det"),
        ("INVALID_NODE", "Invalid Node - det_2", "det_2", "Det"),
    )
    trt = _install(monkeypatch, parse_errors=errors)
    with pytest.raises(EngineBuildError) as info:
        _build(tmp_path)
    msg = str(info.value)
    assert "could not parse the ONNX (2 error(s))" in msg
    assert (
        "In node 'det_1' (operator Det): UNSUPPORTED_NODE: No importer registered for op: Det"
        in msg
    )
    assert "INVALID_NODE: Invalid Node - det_2" in msg
    assert _calls(trt, "build_serialized_network") == []


def test_build_returning_none_is_an_error(monkeypatch, tmp_path):
    _install(monkeypatch, build_returns_none=True)
    with pytest.raises(
        EngineBuildError, match="build_serialized_network returned None on NVIDIA Orin"
    ):
        _build(tmp_path)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_dla_core_sets_device_and_fallback(monkeypatch, tmp_path):
    trt = _install(monkeypatch, dla_cores=2)
    eng = _build(tmp_path, dla=1)
    assert trt.BuilderFlag.GPU_FALLBACK in _calls(trt, "set_flag")
    assert eng.dla_core == 1 and "DLA_core=1" in eng.build_flags
    assert eng.dla_gpu_layers == ()  # Relu runs on the DLA (what config.can_run_on_DLA says)
    _install(monkeypatch, dla_cores=0)
    with pytest.raises(EngineBuildError, match="--dla-core 0 asked for, but this device has 0 DLA"):
        _build(tmp_path, dla=0)


def test_no_device_and_no_package_are_unavailable_errors(monkeypatch, tmp_path):
    _install(monkeypatch, has_device=False)
    with pytest.raises(TensorRTUnavailableError, match="cannot create a builder"):
        _build(tmp_path)
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(TensorRTUnavailableError, match="pip install tensorrt.*python3-libnvinfer"):
        import_tensorrt()
    assert installed_version() is None


def test_parser_rejects_non_onnx_bytes(monkeypatch, tmp_path):
    _install(monkeypatch)
    build = EngineFromOnnx(lambda: b"not an onnx file", None, _cfg(tmp_path, "fp32"), lambda: "g")
    with pytest.raises(EngineBuildError, match="MODEL_DESERIALIZE_FAILED"):
        build()
    assert onnx.load_from_string(FP32).graph.input[0].name == "images"
