"""A fake of the TensorRT Python API subset `export/tensorrt_build.py` calls, for CPU tests.

Same names and call semantics as TensorRT 10.x / 11.x (Logger, Builder, OnnxParser, builder
config, optimization profile, timing cache, IHostMemory-like results), and it records every
call in `module.calls` so tests can assert what our code asked for. It never claims TensorRT
works: the "plan" it returns is a JSON description of the build request, not an engine, and
nothing here runs a network. Knobs reproduce the failure modes we handle (no CUDA device,
parse errors, no fast FP16, build returning None, DLA core count).

Version differences modelled: 11.x has no `BuilderFlag.FP16` and no
`Builder.platform_has_fast_fp16` (both removed upstream).
"""

from __future__ import annotations

import enum
import json
import types
from dataclasses import dataclass, field
from typing import Any

import onnx


class _HostMemory(bytes):
    """IHostMemory stand-in: supports the buffer protocol, so `bytes(x)` works as on the real."""


@dataclass
class _ParserError:
    code: str
    description: str
    node_name: str = ""
    operator: str = ""

    def desc(self) -> str:
        return self.description

    def __str__(self) -> str:
        where = f"In node {self.node_name!r} (operator {self.operator}): " if self.node_name else ""
        return f"{where}{self.code}: {self.description}"


@dataclass
class _Tensor:
    name: str
    shape: tuple[int, ...]


@dataclass
class _Network:
    flags: int
    inputs: list[_Tensor] = field(default_factory=list)

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    def get_input(self, i: int) -> _Tensor:
        return self.inputs[i]


class _Profile:
    def __init__(self) -> None:
        self.shapes: dict[str, tuple[tuple[int, ...], ...]] = {}

    def set_shape(self, name: str, min: tuple, opt: tuple, max: tuple) -> None:  # noqa: A002
        if not all(a <= b <= c for a, b, c in zip(min, opt, max)):
            raise ValueError(f"profile for {name}: need min <= opt <= max, got {min} {opt} {max}")
        self.shapes[name] = (tuple(min), tuple(opt), tuple(max))


class _TimingCache:
    def __init__(self, data: bytes) -> None:
        self.entries = json.loads(data) if data else {"builds": 0}

    def serialize(self) -> _HostMemory:
        return _HostMemory(json.dumps(self.entries).encode())


def make_fake_tensorrt(
    version: str = "10.3.0.30",
    *,
    fast_fp16: bool = True,
    parse_errors: tuple[tuple[str, str, str, str], ...] = (),
    build_returns_none: bool = False,
    dla_cores: int = 0,
    has_device: bool = True,
) -> types.ModuleType:
    """A `tensorrt`-shaped module. Install with monkeypatch.setitem(sys.modules, "tensorrt", m)."""
    major = int(version.split(".")[0])
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version  # type: ignore[attr-defined]
    calls: list[tuple[str, Any]] = []
    trt.calls = calls  # type: ignore[attr-defined]

    class Logger:
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

        def __init__(self, min_severity: int = 2) -> None:
            calls.append(("Logger", min_severity))

    class NetworkDefinitionCreationFlag(enum.IntEnum):
        STRONGLY_TYPED = 1

    flags = {"GPU_FALLBACK": 3} if major >= 11 else {"FP16": 0, "GPU_FALLBACK": 3}
    BuilderFlag = enum.IntEnum("BuilderFlag", flags)  # noqa: N806

    class MemoryPoolType(enum.IntEnum):
        WORKSPACE = 0

    class DeviceType(enum.IntEnum):
        GPU = 0
        DLA = 1

    class IBuilderConfig:
        def __init__(self) -> None:
            self.flags: set[Any] = set()
            self.pools: dict[Any, int] = {}
            self.profiles: list[_Profile] = []
            self.builder_optimization_level = 3
            self.default_device_type = DeviceType.GPU
            self.DLA_core = -1
            self._cache: _TimingCache | None = None

        def set_memory_pool_limit(self, pool: Any, size: int) -> None:
            calls.append(("set_memory_pool_limit", (pool, size)))
            self.pools[pool] = size

        def set_flag(self, flag: Any) -> None:
            calls.append(("set_flag", flag))
            self.flags.add(flag)

        def get_flag(self, flag: Any) -> bool:
            return flag in self.flags

        def add_optimization_profile(self, profile: _Profile) -> int:
            calls.append(("add_optimization_profile", dict(profile.shapes)))
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def create_timing_cache(self, data: bytes) -> _TimingCache | None:
            calls.append(("create_timing_cache", bytes(data)))
            try:
                return _TimingCache(bytes(data))
            except ValueError:  # real TensorRT logs an error and returns None
                return None

        def set_timing_cache(self, cache: _TimingCache, ignore_mismatch: bool) -> bool:
            calls.append(("set_timing_cache", ignore_mismatch))
            self._cache = cache
            return True

        def get_timing_cache(self) -> _TimingCache | None:
            return self._cache

    class OnnxParser:
        def __init__(self, network: _Network, logger: Logger) -> None:
            self.network = network
            self.errors: list[_ParserError] = []

        def parse(self, model: bytes) -> bool:
            calls.append(("parse", len(model)))
            self.errors = [_ParserError(*e) for e in parse_errors]
            try:
                proto = onnx.load_from_string(bytes(model))
            except Exception as e:  # what the real parser reports for non-ONNX bytes
                self.errors.append(_ParserError("MODEL_DESERIALIZE_FAILED", str(e)[:80]))
                return False
            for v in proto.graph.input:
                dims = tuple(d.dim_value or -1 for d in v.type.tensor_type.shape.dim)
                self.network.inputs.append(_Tensor(v.name, dims))
            calls.append(("parsed_dtypes", sorted({i.data_type for i in proto.graph.initializer})))
            return not self.errors

        @property
        def num_errors(self) -> int:
            return len(self.errors)

        def get_error(self, i: int) -> _ParserError:
            return self.errors[i]

    class Builder:
        def __init__(self, logger: Logger) -> None:
            if not has_device:  # what the real factory does without a CUDA device
                raise TypeError("pybind11::init(): factory function returned nullptr")
            self.num_DLA_cores = dla_cores
            if major < 11:
                self.platform_has_fast_fp16 = fast_fp16

        def create_network(self, flags: int = 0) -> _Network:
            calls.append(("create_network", flags))
            return _Network(flags)

        def create_builder_config(self) -> IBuilderConfig:
            return IBuilderConfig()

        def create_optimization_profile(self) -> _Profile:
            return _Profile()

        def build_serialized_network(self, network: _Network, config: IBuilderConfig) -> Any:
            calls.append(("build_serialized_network", network.flags))
            names = {t.name for t in network.inputs}
            for p in config.profiles:
                if set(p.shapes) - names:
                    return None  # real TensorRT logs "profile for unknown tensor" and fails
            if build_returns_none:
                return None
            if config._cache is not None:
                config._cache.entries["builds"] += 1
            desc = {
                "fake": True,
                "version": version,
                "network_flags": network.flags,
                "builder_flags": sorted(f.name for f in config.flags),
                "profiles": [
                    {k: list(map(list, v)) for k, v in p.shapes.items()} for p in config.profiles
                ],
            }
            return _HostMemory(json.dumps(desc).encode())

    for name, obj in dict(
        Logger=Logger,
        NetworkDefinitionCreationFlag=NetworkDefinitionCreationFlag,
        BuilderFlag=BuilderFlag,
        MemoryPoolType=MemoryPoolType,
        DeviceType=DeviceType,
        OnnxParser=OnnxParser,
        Builder=Builder,
        IBuilderConfig=IBuilderConfig,
    ).items():
        setattr(trt, name, obj)
    return trt
