"""What pruning kept, per layer, in original-model indices. Tracked across iterative steps (each
step's local indices are mapped back through the previous ones) and saved in the checkpoint's
`pruning` field, so a pruned model can be rebuilt and reported without re-pruning. Depth pruning
adds `removed_blocks` (module paths now the identity; their layers leave `layers`); a record
without the key (older mtc) removed none."""

from __future__ import annotations

from torch import nn

from compressor.pruning.group import NORM_TYPES, PARAM_LAYER_TYPES, is_depthwise

RECORD_FORMAT = "mtc-pruning-record"
RECORD_VERSION = 1


def _widths(m: nn.Module) -> tuple[int, int]:
    if isinstance(m, nn.modules.conv._ConvNd):
        return m.out_channels, m.in_channels
    if isinstance(m, nn.Linear):
        return m.out_features, m.in_features
    n = m.weight.numel() if getattr(m, "weight", None) is not None else 0
    n = getattr(m, "num_features", n) or n
    return n, n


class KeepTracker:
    """Original indices still alive on each side of each parameterised layer."""

    def __init__(self, model: nn.Module):
        self.types: dict[str, str] = {}
        self.kept: dict[str, dict[str, list[int]]] = {}
        for name, m in model.named_modules():
            if isinstance(m, PARAM_LAYER_TYPES):
                o, i = _widths(m)
                self.types[name] = type(m).__name__
                self.kept[name] = {"out": list(range(o)), "in": list(range(i))}
        self._depthwise = {n for n, m in model.named_modules() if is_depthwise(m)}
        self._norm = {n for n, m in model.named_modules() if isinstance(m, NORM_TYPES)}

    def apply(self, changes: list[tuple[str, bool, list[int]]]) -> None:
        """Drop the given local indices (positions in the current layer) from the record."""
        for name, is_out, idxs in changes:
            if name not in self.kept:
                continue
            sides = ["out"] if is_out or name in self._norm else ["in"]
            if name in self._depthwise or name in self._norm:
                sides = ["out", "in"]
            drop = set(idxs)
            for side in sides:
                cur = self.kept[name][side]
                self.kept[name][side] = [v for pos, v in enumerate(cur) if pos not in drop]

    def drop_blocks(self, blocks: list[str]) -> None:
        """Layers inside removed blocks no longer exist: they leave the record."""
        for name in list(self.kept):
            if any(name == b or name.startswith(b + ".") for b in blocks):
                del self.kept[name]

    def widths(self, name: str) -> tuple[int, int]:
        return len(self.kept[name]["out"]), len(self.kept[name]["in"])

    def to_record(self, before: dict[str, tuple[int, int]]) -> dict[str, dict]:
        """Per layer whose width changed: type, widths before/after, kept original indices."""
        layers = {}
        for name, kept in self.kept.items():
            o0, i0 = before[name]
            o1, i1 = len(kept["out"]), len(kept["in"])
            if (o0, i0) == (o1, i1):
                continue
            layers[name] = {
                "type": self.types[name],
                "out": [o0, o1],
                "in": [i0, i1],
                "kept_out": kept["out"] if o1 != o0 else None,
                "kept_in": kept["in"] if i1 != i0 else None,
            }
        return layers

    def snapshot(self) -> dict[str, tuple[int, int]]:
        return {n: self.widths(n) for n in self.kept}


def check_record_matches(model: nn.Module, layers: dict[str, dict]) -> list[str]:
    """Layers whose recorded width differs from the live module (empty = consistent)."""
    modules = dict(model.named_modules())
    bad = []
    for name, rec in layers.items():
        if name not in modules:
            bad.append(f"{name}: missing")
            continue
        o, i = _widths(modules[name])
        if (rec["out"][1], rec["in"][1]) != (o, i):
            bad.append(f"{name}: recorded {rec['out'][1]}x{rec['in'][1]}, live {o}x{i}")
    return bad
