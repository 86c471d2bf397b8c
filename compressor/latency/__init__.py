"""Torch side of the latency model: export a model's layer probes (a probe bundle) for timing on
the deploy backend, measure one locally (ONNX Runtime CPU) with a cache, and time whole models.
The timing itself and the table format live in the torch-free `runtime.latency_model`."""

from compressor.latency.local import is_local, measure_models, obtain_table, plan_measurer
from compressor.latency.probes import export_probe_bundle, probed_layers

__all__ = [
    "export_probe_bundle",
    "is_local",
    "measure_models",
    "obtain_table",
    "plan_measurer",
    "probed_layers",
]
