"""Checks run at every hop: the probe inputs, ONNX Runtime as the reference, parity against
PyTorch, and reading each written artifact back through the runtime."""
