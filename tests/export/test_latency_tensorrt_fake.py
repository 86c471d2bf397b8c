"""The TensorRT latency timer through the one TensorRT fake: every probe is built with the one
builder (FP16 builder flag on 10.x, FP16 ONNX on strongly typed 11.x) and run by the runtime's
tensorrt backend, and the table is keyed by the fake GPU and TensorRT version. The fake's times
are not TensorRT's: this checks our plumbing, never a latency."""

from __future__ import annotations

import pytest
import torch
from cuda_memory_fake import install_fake_tensorrt  # tests/fakes, put on the path by conftest

from compressor.latency import export_probe_bundle
from export.fp16.convert import convert_to_fp16
from runtime.latency_model.bundle import ProbeBundleError, load_bundle
from runtime.latency_model.measure import MeasureConfig, measure_bundle
from runtime.latency_model.tensorrt_timer import TensorRTTimer
from runtime.latency_model.timers import Repeat

HW = (32, 64)
FAST = MeasureConfig(repeat=Repeat(0, 1, 0.0, 1), anchor_repeat=Repeat(0, 1, 0.0, 1))


class TinyNet(torch.nn.Module):
    """Three convs (a test of plumbing needs few probes); any multi-task dict output works."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv2d(3, 16, 3, 2, 1)
        self.b = torch.nn.Conv2d(16, 32, 3, 1, 1)
        self.head = torch.nn.Conv2d(32, 2, 1)

    def forward(self, x):
        y = torch.relu(self.b(torch.relu(self.a(x))))
        return {"drivable": self.head(y)}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    torch.manual_seed(0)
    model = TinyNet().eval()
    root = tmp_path_factory.mktemp("b")
    plain = export_probe_bundle(model, root / "plain", HW, 1)
    fp16 = export_probe_bundle(
        model, root / "fp16", HW, 1, fp16_anchor=lambda m: convert_to_fp16(m)[0]
    )
    return load_bundle(plain), load_bundle(fp16)


def test_tensorrt_10_table_uses_the_fp16_builder_flag(bundles, tmp_path, monkeypatch):
    inst = install_fake_tensorrt(monkeypatch, "10.3.0.30")
    table = measure_bundle(bundles[0], TensorRTTimer("fp16"), tmp_path / "t.json", FAST)
    k = table.key
    assert (k.backend, k.precision, k.device) == ("tensorrt", "fp16", "Fake GPU")
    assert dict(k.versions) == {"tensorrt": "10.3.0.30"}
    builds = inst.trt.builds
    assert len(builds) == bundles[0].n_cells + len(bundles[0].anchors)
    assert all("FP16" in str(b["builder_flags"]) for b in builds)
    assert set(table.layers) == {"a", "b", "head"}
    assert table.layers["head"].vary_out is False and table.layers["b"].vary_in


def test_tensorrt_11_needs_fp16_onnx_and_gets_it(bundles, tmp_path, monkeypatch):
    inst = install_fake_tensorrt(monkeypatch, "11.1.0")
    with pytest.raises(ProbeBundleError, match="--fp16-anchors"):
        measure_bundle(bundles[0], TensorRTTimer("fp16"), tmp_path / "t.json", FAST)
    table = measure_bundle(bundles[1], TensorRTTimer("fp16"), tmp_path / "t16.json", FAST)
    assert table.key.versions == (("tensorrt", "11.1.0"),)
    parsed = [c[1] for c in inst.trt.calls if c[0] == "parsed_dtypes"]
    assert parsed and all(10 in dtypes for dtypes in parsed)  # every network carried FP16 (10)


@pytest.mark.gpu
def test_real_tensorrt_times_probes(tmp_path):
    """On a machine with an NVIDIA GPU and TensorRT: a real FP16 table of a small model, and its
    prediction at full width equals the measured whole model (the fit's first anchor)."""
    pytest.importorskip("tensorrt", reason="needs TensorRT")
    torch.manual_seed(0)
    b = load_bundle(
        export_probe_bundle(
            TinyNet().eval(),
            tmp_path / "b",
            (384, 640),
            1,
            fp16_anchor=lambda m: convert_to_fp16(m)[0],
        )
    )
    table = measure_bundle(b, TensorRTTimer("fp16"), tmp_path / "t.json")
    assert table.key.backend == "tensorrt" and "Fake" not in table.key.device
    assert all(t.ms.min() > 0 for t in table.probes.values())
    assert table.predict() == pytest.approx(table.anchors[0].ms)
