"""Hop 3: ONNX -> TensorRT. The GPU-free lint (rules + the op tables in `data/`), the engine
build, and the ready trtexec / Python build scripts for the target machine."""
