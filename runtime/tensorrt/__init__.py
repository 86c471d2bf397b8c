"""ONNX -> TensorRT engine, torch-free: one file per job.

targets.py         the TensorRT releases mtc builds for, and the words that differ by release
                   (FP16 / INT8 paths, NMS kinds) that the sidecar schema also reads
errors.py          TensorRTUnavailableError, EngineBuildError, CalibrationCacheError
device.py          importing TensorRT, the GPU's name, the timing cache file
builder.py         `build_serialized_engine`: parse, configure (FP16 / INT8 / DLA), build
nms.py             NMS appended to the engine's network (EfficientNMS_TRT or INMSLayer)
calibration.py     TensorRT's INT8 calibration cache (written at export, read for the DLA build)
engine_sidecar.py  the engine's sidecar, made from the source ONNX's
cli.py             `python -m runtime.tensorrt model.onnx ...`
bundle.py          the device build script `<name>_build_engine.py`: these modules in one file

Importing the package imports none of them; nothing here imports TensorRT before a build."""

from __future__ import annotations
