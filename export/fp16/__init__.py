"""Hop 2: FP32 ONNX -> FP16 ONNX. The converter, the range-driven FP32 islands, the FP16
rounding emulation and the agreement check that decides whether the FP16 artifact ships."""
