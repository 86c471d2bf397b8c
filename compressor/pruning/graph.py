"""The dependency graph: Torch-Pruning's DepGraph traced on the model, turned into our
ChannelGroups, with protected layers resolved by name and groups we cannot prune safely frozen
(and reported with the reason) instead of guessed at."""

from __future__ import annotations

import difflib
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn
from torch.overrides import TorchFunctionMode

from compressor.pruning.errors import ProtectedLayerError, PruningGraphError
from compressor.pruning.group import ChannelGroup, LayerSlice, slice_kind

ROOT_TYPES = (nn.modules.conv._ConvNd, nn.Linear)
# Channel semantics do not survive a matrix product (the channel axis may be contracted or
# become a token axis); DepGraph treats such ops as element-wise, so we refuse those groups.
_MATMUL = re.compile(r"(mm|matmul|einsum|baddbmm|bmm)backward", re.IGNORECASE)
_CATS = (torch.cat, torch.concat, torch.concatenate)


@dataclass(frozen=True)
class FrozenGroup:
    """A coupled channel set left untouched, and why (shown in the report)."""

    root: str
    size: int
    reason: str
    layers: tuple[str, ...] = ()


def resolve_protected(model: nn.Module, names: Iterable[str]) -> list[nn.Module]:
    """Modules for the given names; an unknown name is an error that lists close names."""
    modules = dict(model.named_modules())
    found = []
    for name in names:
        if name not in modules or name == "":
            close = difflib.get_close_matches(name, [n for n in modules if n], n=5, cutoff=0.5)
            hint = f"; close names: {', '.join(close)}" if close else ""
            raise ProtectedLayerError(
                f"protected layer {name!r} matches no module of {type(model).__name__}{hint} "
                "(names are module paths as in model.named_modules(), e.g. 'model.24.m.0')"
            )
        found.append(modules[name])
    return found


def _set_modes(model: nn.Module, modes: dict[nn.Module, bool]) -> None:
    for m, training in modes.items():
        m.training = training


class _CatWidths(TorchFunctionMode):
    """Records each channel concat's input widths, keyed by the result's grad_fn. DepGraph
    infers them from neighbouring layers; when one input has no layer behind it (e.g. the image,
    pooled) it gives up on that concat and maps each of its inputs to offset 0, so a group that
    enters the concat twice loses one of its slices there."""

    def __init__(self) -> None:
        super().__init__()
        self.widths: dict = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func in _CATS and isinstance(out, torch.Tensor) and out.grad_fn is not None:
            tensors = args[0] if args else kwargs["tensors"]
            dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
            if out.ndim > 1 and dim % out.ndim == 1:
                self.widths[out.grad_fn] = [int(t.shape[1]) for t in tensors]
        return out


class _TraceForward:
    """Trace in train mode with BN frozen: the calibration mode, in which heads output their
    raw tensors (fewer decode ops for the tracer to interpret). Remembers the output tensors:
    DepGraph only marks an output node when the last op is not a layer, so a conv whose result
    *is* an output would otherwise look prunable; and the concats' input widths. The input
    requires grad so that a branch computed from the image alone (an image pyramid concatenated
    with features) is in the autograd graph, i.e. DepGraph sees every input of such a concat."""

    def __init__(self) -> None:
        self.outputs: list[torch.Tensor] = []
        self.cat_widths: dict = {}

    def __call__(self, model: nn.Module, x: torch.Tensor):
        model.train()
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        if x.is_floating_point():
            x = x.detach().requires_grad_(True)
        with _CatWidths() as cats:
            out = model(x)
        self.cat_widths = cats.widths
        self.outputs = [t for t in tp.utils.flatten_as_list(out) if isinstance(t, torch.Tensor)]
        return out


class _TracedDepGraph(tp.DependencyGraph):
    """DepGraph whose channel concats carry the traced input widths before its shape inference
    and index mapping run; concats without them are listed in `untraced_concats`."""

    def __init__(self, tracer: _TraceForward):
        super().__init__()
        self._tracer = tracer
        self.untraced_concats: set = set()

    def _trace(self, *args, **kwargs):
        module2node = super()._trace(*args, **kwargs)
        widths = self._tracer.cat_widths
        for node in module2node.values():
            if node.type != tp.ops.OPTYPE.CONCAT:
                continue
            got = widths.get(node.grad_fn)
            if got is not None and len(got) == len(node.inputs):
                node.module.concat_sizes = list(got)
            else:  # not a channel concat, or an input DepGraph does not see (a leaf)
                self.untraced_concats.add(node)
        return module2node


class PruneGraph:
    """DepGraph of `model` plus the prunable ChannelGroups and the frozen ones."""

    def __init__(
        self,
        model: nn.Module,
        example_inputs: torch.Tensor,
        protected: Iterable[str] = (),
        protect_outputs: bool = True,
    ):
        self.model = model
        self.protected_names = tuple(protected)
        protected_modules = resolve_protected(model, self.protected_names)
        self._ignored = {m for p in protected_modules for m in p.modules()}
        self.protect_outputs = protect_outputs
        self.names = {m: n for n, m in model.named_modules()}
        modes = {m: m.training for m in model.modules()}
        tracer = _TraceForward()
        try:
            with warnings.catch_warnings(), torch.enable_grad():
                warnings.simplefilter("ignore")
                self.dg = _TracedDepGraph(tracer).build_dependency(
                    model, example_inputs=example_inputs, forward_fn=tracer, verbose=False
                )
        except Exception as e:  # the tracer raises anything from inside user code
            raise PruningGraphError(
                f"could not trace {type(model).__name__} on an input of shape "
                f"{tuple(example_inputs.shape)}: {type(e).__name__}: {str(e).splitlines()[0]}"
            ) from None
        finally:
            _set_modes(model, modes)
        self._cut_at_matmuls()
        out_fns = {t.grad_fn for t in tracer.outputs if t.grad_fn is not None}
        self._output_layers = {
            m for m, node in self.dg.module2node.items() if node.grad_fn in out_fns
        }
        self.groups: list[ChannelGroup] = []
        self.frozen: list[FrozenGroup] = []
        self._collect()

    def _cut_at_matmuls(self) -> None:
        """Stop dependency propagation at matrix products: a group that reaches one is frozen
        anyway, and following the tracer's element-wise reading through a matmul's reshapes
        multiplies index lists (minutes of work and gigabytes for one attention block)."""
        for node in self.dg.module2node.values():
            fn = node.grad_fn
            if node.module not in self.names and fn is not None and _MATMUL.search(fn.name()):
                node.dependencies = []

    def _is_out(self, fn) -> bool:
        return self.dg.is_out_channel_pruning_fn(fn)

    def _collect(self) -> None:
        visited: set[nn.Module] = set()
        for m in list(self.dg.module2node):
            if not isinstance(m, ROOT_TYPES) or m in visited:
                continue
            pruner = self.dg.get_pruner_of_module(m)
            if pruner is None or pruner.get_out_channels(m) is None:
                continue
            n = pruner.get_out_channels(m)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tg = self.dg.get_pruning_group(m, pruner.prune_out_channels, list(range(n)))
            members = []
            for dep, _ in tg:
                if self._is_out(dep.handler) and isinstance(dep.target.module, nn.Module):
                    visited.add(dep.target.module)
                    if isinstance(dep.target.module, ROOT_TYPES):
                        members.append(self.names.get(dep.target.module, "?"))
            reason = self._frozen_reason(tg, n)
            if reason:
                self.frozen.append(FrozenGroup(self.names.get(m, "?"), n, reason, tuple(members)))
                continue
            group = ChannelGroup(len(self.groups), self.names[m], n, self._slices(tg, n))
            group.handle = (m, pruner.prune_out_channels)
            self.groups.append(group)

    def _frozen_reason(self, tg, n: int) -> str | None:
        for item in tg:
            target = item.dep.target.module
            if self._is_out(item.dep.handler) and target in self._ignored:
                return f"reaches protected layer {self.names.get(target)!r}"
            is_output = isinstance(target, tp.ops._OutputOp) or target in self._output_layers
            if self.protect_outputs and is_output and self._is_out(item.dep.handler):
                return "its channels are a model output (prediction layer)"
            if item.dep.target in self.dg.untraced_concats:
                return "channels pass through a concat whose input widths could not be traced"
            grad_fn = getattr(item.dep.target, "grad_fn", None)
            if grad_fn is not None and _MATMUL.search(grad_fn.name()):
                return f"channels pass through a matrix product ({grad_fn.name()})"
            roots = item.root_idxs
            if roots and any(r is None or r < 0 or r >= n for r in roots):
                return "channel index mapping is not one-to-one (reshape the tracer cannot follow)"
        return None

    def _slices(self, tg, n: int) -> list[LayerSlice]:
        slices = []
        for item in tg:
            m = item.dep.target.module
            if not isinstance(m, nn.Module) or m not in self.names:
                continue
            kind = slice_kind(m, self._is_out(item.dep.handler))
            if kind is None or not item.idxs:
                continue
            local = torch.as_tensor(list(item.idxs), dtype=torch.long)
            root = torch.as_tensor(list(item.root_idxs), dtype=torch.long)
            slices.append(LayerSlice(self.names[m], kind, local, root))
        return slices

    def modules_in_groups(self) -> dict[str, nn.Module]:
        """Every parameterised module some prunable group touches, by name."""
        mods = dict(self.model.named_modules())
        return {s.module: mods[s.module] for g in self.groups for s in g.slices}

    def execute(self, group: ChannelGroup, channels: list[int]) -> list[tuple[str, bool, list]]:
        """Remove `channels` of `group` from the model; returns what each layer lost as
        (module name, output side?, local indices at the time of pruning)."""
        module, fn = group.handle
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tg = self.dg.get_pruning_group(module, fn, sorted(channels))
        changes = []
        for item in tg:
            m = item.dep.target.module
            if isinstance(m, nn.Module) and m in self.names:
                changes.append((self.names[m], self._is_out(item.dep.handler), list(item.idxs)))
        tg.prune()
        return changes
