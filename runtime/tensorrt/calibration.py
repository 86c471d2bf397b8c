"""TensorRT's INT8 calibration cache: the text format (written at export from the calibrated
ranges, read back on the device) and the calibrator that hands it to TensorRT for the DLA
build (implicit quantisation, TensorRT 10.x)."""

from __future__ import annotations

import math
import os
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.fileio import atomic_write_bytes
from runtime.tensorrt.device import installed_version
from runtime.tensorrt.errors import CalibrationCacheError, EngineBuildError

# TensorRT's calibrator classes by the algorithm name its cache header carries. DLA needs
# EntropyCalibration2 (IInt8EntropyCalibrator2 docs: "the required calibrator for DLA").
CALIBRATOR_CLASSES = {
    "EntropyCalibration2": "IInt8EntropyCalibrator2",
    "MinMaxCalibration": "IInt8MinMaxCalibrator",
}
DEFAULT_CALIBRATOR = "EntropyCalibration2"
CALIB_CACHE_TRT_VERSION = "10.3.0"  # JetPack 6: the only platform the cache is for (DLA, 10.x)


@dataclass(frozen=True)
class CalibrationCache:
    """`TRT-<version>-<algorithm>`, then `<tensor>: <scale>` per line, the scale (amax / 127)
    as the hex of its big-endian float32 (sampleINT8's README; NVIDIA's forum answers)."""

    version: int  # NV_TENSORRT_VERSION of the header (`trt_version_number`)
    algorithm: str  # a key of CALIBRATOR_CLASSES
    scales: dict[str, float]  # tensor name -> scale, as float32 rounds it

    def amax(self) -> dict[str, float]:
        return {name: scale * 127.0 for name, scale in self.scales.items()}

    def text(self, version: int | None = None) -> str:
        head = f"TRT-{self.version if version is None else version}-{self.algorithm}\n"
        rows = (f"{name}: {struct.pack('>f', s).hex()}\n" for name, s in self.scales.items())
        return head + "".join(rows)


def trt_version_number(version: str) -> int:
    """NV_TENSORRT_VERSION, as the cache header spells it: major*10000 + minor*100 + patch
    from TensorRT 10 (NvInferVersion.h NV_TENSORRT_VERSION_INT: 10.3.0 -> 100300), major*1000
    + minor*100 + patch before (8.6.1 -> 8601, 7.0.0 -> 7000)."""
    parts = [int(p) if p.isdigit() else 0 for p in (str(version).split(".") + ["0", "0"])[:3]]
    major, minor, patch = parts
    return major * (10000 if major >= 10 else 1000) + minor * 100 + patch


def write_calibration_cache(
    path: str | os.PathLike[str],
    amax: Mapping[str, float],
    calibrator: str = DEFAULT_CALIBRATOR,
    trt_version: str | None = None,
) -> Path:
    """Write TensorRT's calibration cache for per-tensor ranges `amax` (tensor name of the FP32
    ONNX -> the calibrated absolute maximum; scale = amax / 127), atomically. `trt_version`
    for the header defaults to the installed TensorRT's, else 10.3.0 (JetPack 6, where DLA
    builds from it; the builder rewrites the header for the TensorRT it runs on anyway)."""
    if calibrator not in CALIBRATOR_CLASSES:
        raise CalibrationCacheError(
            f"calibrator {calibrator!r} is not one of {', '.join(CALIBRATOR_CLASSES)}"
        )
    bad = [n for n, v in amax.items() if not (math.isfinite(v) and v > 0)]
    odd = [n for n in amax if not n or n != n.strip() or any(c in n for c in "\r\n")]
    if not amax or bad or odd:
        why = f"amax must be finite and > 0, got {[(n, amax[n]) for n in bad[:3]]}" if bad else ""
        why = why or (f"tensor names must be one line, got {odd[:3]}" if odd else "no tensors")
        raise CalibrationCacheError(f"cannot write the calibration cache {path}: {why}")
    scales = {
        n: struct.unpack(">f", struct.pack(">f", float(v) / 127.0))[0] for n, v in amax.items()
    }
    version = trt_version_number(trt_version or installed_version() or CALIB_CACHE_TRT_VERSION)
    text = CalibrationCache(version, calibrator, scales).text()
    return atomic_write_bytes(path, text.encode("ascii"))


def parse_calibration_cache(text: str, where: str = "calibration cache") -> CalibrationCache:
    """The inverse of `CalibrationCache.text`; names may hold colons (`input_1:0: 3c010a14`)."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    head = re.fullmatch(r"TRT-(\d+)-(\w+)", lines[0].strip()) if lines else None
    if head is None or head.group(2) not in CALIBRATOR_CLASSES:
        first = lines[0][:60] if lines else ""
        raise CalibrationCacheError(
            f"{where}: the first line must be TRT-<version>-<calibrator> with a calibrator of "
            f"{', '.join(CALIBRATOR_CLASSES)}, got {first!r}"
        )
    scales: dict[str, float] = {}
    for i, line in enumerate(lines[1:], start=2):
        name, sep, value = line.rpartition(":")
        try:
            scale = struct.unpack(">f", bytes.fromhex(value.strip()))[0] if sep and name else None
        except (ValueError, struct.error):
            scale = None
        if scale is None:
            raise CalibrationCacheError(f"{where} line {i} is not '<tensor>: <8 hex digits>'")
        scales[name.strip()] = scale
    return CalibrationCache(int(head.group(1)), head.group(2), scales)


def load_calibration_cache(path: str | os.PathLike[str]) -> CalibrationCache:
    p = Path(path)
    if not p.is_file():
        raise CalibrationCacheError(
            f"no calibration cache {p}; mtc-export --int8 writes <name>_int8.calib beside the ONNX"
        )
    try:
        text = p.read_text(encoding="ascii")
    except UnicodeDecodeError:
        raise CalibrationCacheError(f"{p} is not a TensorRT calibration cache (not text)") from None
    return parse_calibration_cache(text, str(p))


# -- the DLA build: a calibrator that only hands over the cache -------------------------------
def dla_calibration_cache(data: bytes | None) -> CalibrationCache:
    if data is None:
        raise EngineBuildError(
            "--dla-core with INT8 needs the calibration cache (<name>_int8.calib, written by "
            "mtc-export --int8 beside the ONNX); pass --calib PATH"
        )
    try:
        text = bytes(data).decode("ascii")
    except UnicodeDecodeError:
        raise EngineBuildError("the calibration cache is not TensorRT's text format") from None
    try:
        return parse_calibration_cache(text)
    except CalibrationCacheError as e:
        raise EngineBuildError(str(e)) from None


def cache_calibrator(trt: Any, cache: CalibrationCache) -> Any:
    """A TensorRT calibrator that only hands over `cache` (no batches: the ranges were
    calibrated at export, on the same images as the Q/DQ ONNX). The header is written for the
    installed TensorRT: the scales are ours, not a TensorRT calibration, so nothing in them
    depends on its version. If TensorRT still asks for batches it did not take the cache."""
    base = getattr(trt, CALIBRATOR_CLASSES[cache.algorithm], None)
    if base is None:
        raise EngineBuildError(
            f"TensorRT {trt.__version__} has no {CALIBRATOR_CLASSES[cache.algorithm]} "
            "(implicit quantisation was removed in TensorRT 11)"
        )
    data = cache.text(version=trt_version_number(str(trt.__version__))).encode("ascii")

    class CacheOnlyCalibrator(base):  # type: ignore[misc,valid-type]
        algorithm_name, tensors = cache.algorithm, len(cache.scales)

        def __init__(self) -> None:
            base.__init__(self)  # type: ignore[misc]
            self.batches_asked = 0

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: Any, *args: Any) -> None:
            self.batches_asked += 1
            return None  # no calibration data here: the cache is the calibration

        def read_calibration_cache(self, *args: Any) -> bytes:
            return data

        def write_calibration_cache(self, cache: Any, *args: Any) -> None:
            return None

    return CacheOnlyCalibrator()


def check_calibrator(trt: Any, calibrator: Any | None) -> None:
    if calibrator is not None and calibrator.batches_asked:
        raise EngineBuildError(
            f"TensorRT {trt.__version__} did not take the calibration cache (it asked for "
            "calibration batches); re-export with mtc-export --int8 to rewrite <name>_int8.calib"
        )
