"""Real TensorRT on a real GPU: build a tiny engine from the stand-in ONNX and check it against
ONNX Runtime. Skipped (with the reason) where TensorRT or a CUDA GPU is missing."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from runtime_helpers import make_artifact, split_frame

from runtime import load_artifact, run
from runtime.backends.cuda_memory import create_memory
from runtime.errors import MtcError
from runtime.fileio import file_sha256
from runtime.sidecar import BatchRange, Sidecar, TensorRTInfo, read_sidecar, sidecar_path

pytestmark = pytest.mark.gpu
PROFILE = (1, 2, 4)


def _tensorrt_and_gpu() -> tuple[Any, str]:
    trt = pytest.importorskip("tensorrt", reason="TensorRT's Python package is not installed")
    try:
        mem = create_memory("auto")
    except MtcError as e:
        pytest.skip(f"no usable CUDA GPU or CUDA bindings: {e}")
    name = mem.device_name()
    mem.close()
    return trt, name


def _build_engine(trt: Any, gpu: str, onnx_path: Path) -> Path:
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        pytest.fail(f"TensorRT could not parse the stand-in ONNX: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 28)
    profile = builder.create_optimization_profile()
    c, h, w = 3, *read_sidecar(onnx_path).preprocess.input_hw
    profile.set_shape("images", *[(b, c, h, w) for b in PROFILE])
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    assert plan is not None, "TensorRT failed to build the stand-in engine"
    engine = onnx_path.with_suffix(".engine")
    engine.write_bytes(bytes(plan))
    src = read_sidecar(onnx_path)
    keep = {f.name: getattr(src, f.name) for f in dataclasses.fields(src)}
    for derived in ("format", "artifact", "sha256", "created_by"):
        keep.pop(derived)
    Sidecar.for_artifact(
        engine,
        **{
            **keep,
            "batch": BatchRange(*PROFILE),
            "source_onnx_sha256": src.sha256,
            "tensorrt": TensorRTInfo(trt.__version__, gpu),
        },
    ).write(sidecar_path(engine))
    assert read_sidecar(engine).sha256 == file_sha256(engine)
    return engine


@pytest.mark.parametrize("variant", [{}, {"nms_in_graph": True}, {"seg_output": "logits"}])
def test_engine_matches_onnxruntime(tmp_path, variant):
    trt, gpu = _tensorrt_and_gpu()
    onnx_path = make_artifact(tmp_path, conv_channels=8, **variant)
    engine = _build_engine(trt, gpu, onnx_path)
    x = np.random.default_rng(0).normal(size=(4, 3, 32, 64)).astype(np.float32)
    with load_artifact(onnx_path) as ref, load_artifact(engine) as be:
        assert be.name == "tensorrt" and gpu in be.device
        for n in (4, 3, 1):  # full, short (dynamic shape), smallest
            want, got = ref.infer(x[:n]), be.infer(x[:n])
            assert set(got) == set(want)
            for name in want:
                assert got[name].shape == want[name].shape, name
                if want[name].dtype == np.float32:
                    np.testing.assert_allclose(got[name], want[name], rtol=1e-3, atol=1e-3)
                else:
                    assert (got[name] != want[name]).mean() < 1e-3, name
            assert {"h2d", "compute", "d2h", "infer"} <= set(be.last_timing)
            assert be.last_timing["compute"] > 0


def test_pipeline_on_engine_equals_onnx(tmp_path):
    trt, gpu = _tensorrt_and_gpu()
    onnx_path = make_artifact(tmp_path)
    engine = _build_engine(trt, gpu, onnx_path)
    frames = [split_frame(), split_frame(60, 90), split_frame(), split_frame(30, 30), split_frame()]
    a = run(onnx_path, frames, batch=4, progress=False).results
    b = run(engine, frames, batch=4, progress=False).results
    for ra, rb in zip(a, b):
        np.testing.assert_allclose(ra.boxes, rb.boxes, atol=1e-2)
        np.testing.assert_array_equal(ra.drivable, rb.drivable)


def test_cuda_graph_replays_equal_plain_enqueue_and_overlap_runs(tmp_path):
    trt, gpu = _tensorrt_and_gpu()
    engine = _build_engine(trt, gpu, make_artifact(tmp_path, conv_channels=8))
    rng = np.random.default_rng(1)
    xs = [rng.normal(size=(n, 3, 32, 64)).astype(np.float32) for n in (4, 4, 1, 4, 1)]
    with load_artifact(engine) as plain, load_artifact(engine, cuda_graph=True) as graph:
        for x in xs:  # first call per size captures, later ones launch the graph on new data
            want, got = plain.infer(x), graph.infer(x)
            for name in want:
                np.testing.assert_array_equal(got[name], want[name], err_msg=name)
        assert set(graph._graphs) == {4, 1}
    frames = [split_frame(), split_frame(60, 90), split_frame(), split_frame(30, 30)] * 3
    seq = run(engine, frames, batch=2, overlap=False, progress=False).results
    ovl = run(engine, frames, batch=2, overlap=True, progress=False).results
    for a, b in zip(seq, ovl):
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.drivable, b.drivable)
