"""TensorRT's calibration cache text format, as `runtime.tensorrt.calibration` writes and reads
it: the header `TRT-<NV_TENSORRT_VERSION>-<calibrator>`, then `<tensor>: <hex of big-endian
float32 scale>`, scale = amax / 127. Known answers from NVIDIA's sampleINT8 README and forum."""

from __future__ import annotations

import math
import struct

import pytest

from runtime.tensorrt.calibration import (
    load_calibration_cache,
    parse_calibration_cache,
    trt_version_number,
    write_calibration_cache,
)
from runtime.tensorrt.errors import CalibrationCacheError


def test_known_lines_from_nvidia_decode_to_their_scales():
    # sampleINT8's CalibrationTable (TensorRT 7.0.0) and the forum's worked example
    text = "TRT-7000-EntropyCalibration2\ndata: 3c008912\nrelu46: 3c92aa10\ninput_1:0: 3c010a14\n"
    cache = parse_calibration_cache(text)
    assert (cache.version, cache.algorithm) == (7000, "EntropyCalibration2")
    assert cache.scales["relu46"] == pytest.approx(0.0179033577, rel=1e-7)
    assert cache.scales["data"] == pytest.approx(0.0078448, rel=1e-4)  # ~ 1/127: input in [0, 1]
    assert cache.scales["input_1:0"] == pytest.approx(1 / 127.0, rel=2e-3)  # colon in the name
    assert cache.amax()["relu46"] == pytest.approx(0.0179033577 * 127)
    assert cache.text() == text  # writes back byte for byte


@pytest.mark.parametrize(
    "version,number", [("10.3.0.30", 100300), ("10.12.1", 101201), ("8.6.1", 8601), ("7.0.0", 7000)]
)
def test_header_version_is_nv_tensorrt_version(version, number):
    assert trt_version_number(version) == number


def test_write_then_read_round_trips_the_ranges(tmp_path):
    amax = {"images": 2.64, "/backbone/conv1/Conv_output_0": 31.75, "det": 1e-3}
    path = write_calibration_cache(tmp_path / "m_int8.calib", amax, trt_version="10.3.0.30")
    lines = path.read_text().splitlines()
    assert lines[0] == "TRT-100300-EntropyCalibration2" and len(lines) == 4
    assert lines[1] == "images: " + struct.pack(">f", 2.64 / 127).hex()
    back = load_calibration_cache(path)
    assert list(back.scales) == list(amax)  # order kept
    for name, value in amax.items():
        assert math.isclose(back.amax()[name], value, rel_tol=1e-6)  # float32 rounding only
    assert [p.name for p in tmp_path.iterdir()] == ["m_int8.calib"]  # no temporary left


def test_minmax_calibrator_header(tmp_path):
    path = write_calibration_cache(tmp_path / "c", {"x": 1.0}, "MinMaxCalibration", "10.3.0")
    assert path.read_text().startswith("TRT-100300-MinMaxCalibration\nx: ")


@pytest.mark.parametrize(
    "amax,calibrator,message",
    [
        ({"x": 0.0}, "EntropyCalibration2", r"amax must be finite and > 0, got \[\('x', 0.0\)\]"),
        ({"x": float("nan")}, "EntropyCalibration2", "amax must be finite and > 0"),
        ({"a\nb": 1.0}, "EntropyCalibration2", "tensor names must be one line"),
        ({}, "EntropyCalibration2", "no tensors"),
        ({"x": 1.0}, "Percentile", "calibrator 'Percentile' is not one of EntropyCalibration2"),
    ],
)
def test_bad_ranges_are_refused_and_nothing_is_written(tmp_path, amax, calibrator, message):
    with pytest.raises(CalibrationCacheError, match=message):
        write_calibration_cache(tmp_path / "c.calib", amax, calibrator)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "text,message",
    [
        ("", "first line must be TRT-<version>-<calibrator>"),
        ("TRT-100300-LegacyCalibration\nx: 3c010a14\n", "got 'TRT-100300-LegacyCalibration'"),
        ("TRT-100300-EntropyCalibration2\nx 3c010a14\n", "line 2 is not '<tensor>: <8 hex"),
        ("TRT-100300-EntropyCalibration2\nx: 3c01zz14\n", "line 2 is not"),
    ],
)
def test_malformed_caches_name_the_line(text, message):
    with pytest.raises(CalibrationCacheError, match=message):
        parse_calibration_cache(text)


def test_missing_or_binary_cache_file(tmp_path):
    with pytest.raises(CalibrationCacheError, match="no calibration cache .*mtc-export --int8"):
        load_calibration_cache(tmp_path / "none.calib")
    (tmp_path / "bin.calib").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(CalibrationCacheError, match="is not a TensorRT calibration cache"):
        load_calibration_cache(tmp_path / "bin.calib")
