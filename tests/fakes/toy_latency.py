"""A latency table made up without timing anything: every conv costs `per_mac` ms per
multiply-accumulate (exact under the bilinear cell model: t = k * c_in * c_out), `heavy`
layers `factor` times that, plus a fixed `fixed_ms` for the rest of the model. Keyed to the
model's probed layers like a measured table, so prune() accepts it."""

from __future__ import annotations

import numpy as np
from torch import nn

from compressor.latency.probes import fingerprint, probed_layers
from runtime.latency_model.table import Anchor, LatencyTable, LayerInfo, ProbeTimes, TableKey


def toy_table(
    model: nn.Module,
    hw: tuple[int, int],
    *,
    per_mac: float = 1e-6,
    fixed_ms: float = 1.0,
    heavy: tuple[str, ...] = (),
    factor: float = 1.0,
    channel_block: int = 8,
) -> LatencyTable:
    layers = probed_layers(model, hw)
    mods = dict(model.named_modules())
    infos, probes, full = {}, {}, fixed_ms
    for name, ly in layers.items():
        m = mods[name]
        k = per_mac * int(np.prod(m.kernel_size)) * ly.out_hw[0] * ly.out_hw[1]
        k /= m.groups
        if any(name == h or name.startswith(h + ".") for h in heavy):
            k *= factor
        grid_in = sorted({1, ly.cin})
        grid_out = sorted({1, ly.cout})
        ms = np.array([[k * ci * co for co in grid_out] for ci in grid_in], dtype=float)
        probes[name] = ProbeTimes(grid_in, grid_out, ms, depthwise=ly.depthwise)
        infos[name] = LayerInfo(name, ly.cin, ly.cout, ly.out_hw[0] * ly.out_hw[1])
        full += k * ly.cin * ly.cout
    key = TableKey("toy", "Toy CPU", "fp32", hw, 1, fingerprint(layers, hw, 1))
    meta = {"channel_block": channel_block}
    return LatencyTable(key, infos, probes, [Anchor("full", full, {})], meta)
