"""The TensorRT backend's CUDA-graph option, on CPU through the one TensorRT fake (tests/fakes). The fake
graph records the enqueue at capture and replays it at launch (reading device memory then, like a
real graph); it tests our capture/launch bookkeeping, not CUDA (gpu tests do that)."""

from __future__ import annotations

import numpy as np
import pytest
from runtime_helpers import (  # puts tests/fakes on the path
    FAKE_TRT_VERSION,
    FakeMemory,
    install_fake_tensorrt,
    install_fake_trt,
    make_artifact,
    make_fake_engine,
)

from runtime import load_artifact
from runtime.backends import BackendError
from runtime.backends import tensorrt as trt_backend


class GraphMemory(FakeMemory):
    def __init__(self) -> None:
        super().__init__()
        self.capturing: list | None = None
        self.captures = 0
        self.launches = 0

    def graph_capture_begin(self, stream):
        self.capturing = []

    def graph_capture_end(self, stream):
        work, self.capturing = self.capturing, None
        self.captures += 1
        return work

    def graph_launch(self, graph, stream):
        self.launches += 1
        for replay in graph:
            replay()


def _open(tmp_path, monkeypatch, cuda_graph=True):
    GraphMemory.gpu = install_fake_tensorrt(monkeypatch, FAKE_TRT_VERSION).gpu
    mem = GraphMemory()
    monkeypatch.setattr(trt_backend, "_create_memory", lambda name: mem)
    be = load_artifact(make_fake_engine(tmp_path, profile=(1, 2, 4)), cuda_graph=cuda_graph)
    ctx, real = be._context, be._context.execute_async_v3

    def execute(handle):
        if mem.capturing is None:
            return real(handle)
        shapes = dict(ctx._shapes)  # a graph bakes the shapes it was captured with

        def replay():
            saved, ctx._shapes = ctx._shapes, shapes
            try:
                assert real(handle)
            finally:
                ctx._shapes = saved

        mem.capturing.append(replay)
        return True

    ctx.execute_async_v3 = execute
    return be, mem, ctx


def _batch(n, bright):
    x = np.zeros((n, 3, 32, 64), np.float32)
    x[bright, 0] = 1.0
    return x


def test_first_call_per_batch_size_runs_then_captures_later_calls_launch(tmp_path, monkeypatch):
    be, mem, ctx = _open(tmp_path, monkeypatch)
    with be:
        out = be.infer(_batch(3, [0]))
        assert (mem.captures, mem.launches, ctx.executions) == (1, 0, 1)
        assert [bool(m.all()) for m in out["drivable"]] == [True, False, False]
        out = be.infer(_batch(3, [1, 2]))  # new input, same size: the graph replays on it
        assert (mem.captures, mem.launches, ctx.executions) == (1, 1, 2)
        assert [bool(m.all()) for m in out["drivable"]] == [False, True, True]
        out = be.infer(_batch(1, [0]))  # another size: its own capture
        assert (mem.captures, mem.launches) == (2, 1) and out["drivable"].shape == (1, 32, 64)
        out = be.infer(_batch(3, [2]))  # back to 3: its graph, with its own shape
        assert (mem.captures, mem.launches) == (2, 2)
        assert out["drivable"].shape == (3, 32, 64)
        assert [bool(m.all()) for m in out["drivable"]] == [False, False, True]
        assert {"h2d", "compute", "d2h", "infer"} <= set(be.last_timing)


def test_without_the_option_nothing_is_captured(tmp_path, monkeypatch):
    be, mem, ctx = _open(tmp_path, monkeypatch, cuda_graph=False)
    with be:
        for _ in range(3):
            be.infer(_batch(2, [0]))
    assert (mem.captures, mem.launches, ctx.executions) == (0, 0, 3)


def test_an_adapter_without_graphs_says_what_to_use(tmp_path, monkeypatch):
    install_fake_trt(monkeypatch)  # plain FakeMemory: no graph support, like pycuda here
    be = load_artifact(make_fake_engine(tmp_path), cuda_graph=True)
    with be, pytest.raises(BackendError, match="--memory cuda-python, or drop --cuda-graph"):
        be.infer(_batch(1, [0]))


def test_cuda_graph_and_threads_belong_to_their_backends(tmp_path, monkeypatch):
    with pytest.raises(BackendError, match="--cuda-graph applies to the tensorrt backend only"):
        load_artifact(make_artifact(tmp_path), cuda_graph=True)
    install_fake_trt(monkeypatch)
    with pytest.raises(BackendError, match="--threads applies to the onnxruntime backend only"):
        load_artifact(make_fake_engine(tmp_path), threads=1)
