"""ONNX Runtime on CPU, the reference every exported ONNX is checked with before it is written.
Two threads: exports run next to training jobs and CI, and these graphs are small."""

from __future__ import annotations

import numpy as np
import onnx

from runtime.io_names import INPUT_NAME


class OrtModel:
    """An in-memory ONNX as a callable: NCHW float32 -> {output name: array}."""

    def __init__(self, model: onnx.ModelProto | bytes, threads: int = 2):
        import onnxruntime as ort

        data = model if isinstance(model, bytes) else model.SerializeToString()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        dtype = np.uint8 if images.dtype == np.uint8 else np.float32  # --input uint8 graphs
        outs = self.session.run(None, {INPUT_NAME: np.ascontiguousarray(images, dtype)})
        return dict(zip(self.output_names, outs))
