"""Hop 1: torch -> ONNX. The deploy wrapper (what the graph outputs, NMS in the graph), the trace,
and the simplifier."""
