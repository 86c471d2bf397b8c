"""One fake of the TensorRT Python API (10.x / 11.x names), from build to run, for CPU tests.

Covers the subset mtc calls: Logger, Builder, network from OnnxParser, builder config, flags,
optimisation profiles, memory pool limits, timing cache, build_serialized_network,
Runtime.deserialize_cuda_engine, the ICudaEngine tensor I/O queries and IExecutionContext
(set_input_shape / set_tensor_address / execute_async_v3). Every build call is recorded in
`module.calls` (and TensorRT's log lines in `module.log`) so tests assert what our code asked for.

The "plan" is a JSON document: a header (fake TensorRT version, device name and compute
capability, network and builder flags, the optimisation profile, the I/O tensors) and the source
ONNX bytes. The same fake's runtime deserialises it and "executes" it by running that ONNX in ONNX
Runtime on CPU, reading inputs from and writing outputs to fake device memory by address
(`FakeGpu`; `cuda_memory_fake.FakeMemory` is the runtime's memory adapter over it). So an engine
computes exactly what ONNX Runtime computes on its source ONNX: the fake checks our build, file
and buffer plumbing end to end, and proves nothing about TensorRT's kernels or numerics.

Behaviour modelled on TensorRT's documentation:
- 11.x has no `BuilderFlag.FP16` and no `Builder.platform_has_fast_fp16`; every network is
  strongly typed. In 10.x, FP16 on a STRONGLY_TYPED network is a build error.
- A dynamic input needs a profile; a profile must name network inputs, keep static dimensions,
  and have min <= opt <= max (else `add_optimization_profile` returns -1).
- `deserialize_cuda_engine` returns None (and logs) for a plan from another TensorRT version or a
  device of another compute capability; another device name with the same capability only warns.
- `set_input_shape` returns False outside the profile; `execute_async_v3` returns False unless
  every input shape and every I/O address is set.
- Layers added after parsing (the in-engine NMS tail: gather, elementwise, cast, shuffle, concat,
  topk, reduce, scatter, INMSLayer, the EfficientNMS_TRT plugin) live in `tensorrt_fake_layers`:
  build-time shapes as TensorRT infers them, and numpy at run time after ONNX Runtime, so an
  engine with NMS appended returns real NMS results.
- INT8 and DLA (`tensorrt_fake_int8`): the parser's layers with their types, `BuilderFlag.INT8`
  (10.x only), the calibrators and the calibration cache, `config.can_run_on_DLA(layer)`, GPU
  fallback; the plan records which INT8 mode and which layers stay on the GPU.
Knobs reproduce the failure modes we handle (no CUDA device, parse errors, no fast FP16 / INT8,
build returning None, DLA core count).
"""

from __future__ import annotations

import base64
import enum
import json
import sys
import types
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from tensorrt_fake_int8 import (
    ADDED_LAYER_TYPES,
    algo_type_enum,
    calibrator_classes,
    can_run_on_dla,
    dla_problem,
    implicit_int8,
    layer_type_enum,
    parsed_layers,
)
from tensorrt_fake_layers import (
    NetworkLayers,
    PluginField,
    PluginFieldCollection,
    PluginRegistry,
    Tensor,
    run_layer,
)

PLAN_FORMAT = "mtc-fake-tensorrt-plan/1"
_ONNX_TO_DTYPE = {1: "FLOAT", 10: "HALF", 3: "INT8", 6: "INT32", 7: "INT64", 2: "UINT8", 9: "BOOL"}
_NUMPY = {
    "FLOAT": "float32",
    "HALF": "float16",
    "INT8": "int8",
    "INT32": "int32",
    "INT64": "int64",
    "UINT8": "uint8",
    "BOOL": "bool",
}


@dataclass
class FakeGpu:
    """Device memory as host bytes addressed by integer pointers, plus the device identity the
    engine is tied to."""

    name: str = "Fake GPU"
    compute_capability: tuple[int, int] = (8, 7)
    allocations: dict[int, np.ndarray] = field(default_factory=dict)
    _next: int = 0x10000

    def malloc(self, nbytes: int) -> int:
        ptr = self._next
        self._next += ((nbytes + 255) // 256 + 1) * 256  # aligned, with a gap between buffers
        self.allocations[ptr] = np.zeros(nbytes, np.uint8)
        return ptr

    def free(self, ptr: int) -> None:
        del self.allocations[ptr]

    def view(self, ptr: int, nbytes: int) -> np.ndarray:
        """`nbytes` of device memory at `ptr` (inside one allocation), as a writable uint8 view."""
        for base, buf in self.allocations.items():
            if base <= ptr < base + buf.size:
                if ptr - base + nbytes > buf.size:
                    raise RuntimeError(
                        f"fake GPU: {nbytes} B at {ptr:#x} overruns the {buf.size} B buffer at "
                        f"{base:#x}"
                    )
                return buf[ptr - base : ptr - base + nbytes]
        raise RuntimeError(f"fake GPU: {ptr:#x} is not device memory (freed or never allocated)")


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


_Tensor = Tensor


def _tensor(v: Any) -> Tensor:
    t = v.type.tensor_type
    dims = tuple(
        d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim
    )
    dtype = _ONNX_TO_DTYPE.get(t.elem_type, f"ONNX_{t.elem_type}")
    return Tensor(v.name, dims, dtype, onnx_name=v.name)


@dataclass
class _State:
    """What one fake `tensorrt` module knows: its version, its device, the knobs, the records."""

    version: str
    gpu: FakeGpu
    fast_fp16: bool
    fast_int8: bool
    parse_errors: tuple[tuple[str, str, str, str], ...]
    build_returns_none: bool
    dla_cores: int
    has_device: bool
    calls: list[tuple[str, Any]] = field(default_factory=list)
    log: list[tuple[str, str]] = field(default_factory=list)
    builds: list[dict[str, Any]] = field(default_factory=list)
    registry: PluginRegistry = field(default_factory=PluginRegistry)

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    def error(self, msg: str) -> None:
        self.log.append(("ERROR", msg))
        print(f"[TRT] [E] {msg}", file=sys.stderr)

    def warning(self, msg: str) -> None:
        self.log.append(("WARNING", msg))


class Network(NetworkLayers):
    def __init__(self, state: _State, flags: int, strongly_flag: int, mod: Any = None) -> None:
        self._s, self._m = state, mod
        self.parsed_layers: list[Any] = []  # one per ONNX node (tensorrt_fake_int8.ParsedLayer)
        self.flags = flags
        self.strongly_typed = state.major >= 11 or bool(flags & (1 << strongly_flag))
        self.inputs: list[Tensor] = []
        self.outputs: list[Tensor] = []
        self.layers: list[Any] = []
        self.parsed: list[Tensor] = []  # every ONNX output the parser made a tensor for
        self.onnx: bytes | None = None

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    def get_input(self, i: int) -> _Tensor:
        return self.inputs[i]

    def all_layers(self) -> list[Any]:
        """The parser's layers, then the ones added after it (typed as TensorRT types them)."""
        for layer in self.layers:
            if not hasattr(layer, "type"):
                kind = ADDED_LAYER_TYPES.get(layer.op.split("_")[0], "UNKNOWN")
                layer.type = self._m.LayerType[kind]
        return [*self.parsed_layers, *self.layers]

    @property
    def num_layers(self) -> int:
        return len(self.all_layers())

    def get_layer(self, i: int) -> Any:
        return self.all_layers()[i]


class Profile:
    def __init__(self, state: _State) -> None:
        self._s = state
        self.shapes: dict[str, tuple[tuple[int, ...], ...]] = {}
        self.valid = True

    def set_shape(self, name: str, min: Any, opt: Any, max: Any) -> None:  # noqa: A002
        lo, mid, hi = (tuple(int(d) for d in s) for s in (min, opt, max))
        ok = len(lo) == len(mid) == len(hi) and all(a <= b <= c for a, b, c in zip(lo, mid, hi))
        if not ok:  # TensorRT: setDimensions returns false and the profile is invalid
            self._s.error(f"profile for {name}: need min <= opt <= max, got {lo} {mid} {hi}")
            self.valid = False
        self.shapes[name] = (lo, mid, hi)


class TimingCache:
    def __init__(self, data: bytes) -> None:
        self.entries = json.loads(data) if data else {"builds": 0}

    def serialize(self) -> _HostMemory:
        return _HostMemory(json.dumps(self.entries).encode())


class BuilderConfig:
    def __init__(self, state: _State, device_type: Any) -> None:
        self._s = state
        self.flags: set[Any] = set()
        self.pools: dict[Any, int] = {}
        self.profiles: list[Profile] = []
        self.builder_optimization_level = 3
        self.default_device_type = device_type
        self.DLA_core = -1
        self._cache: TimingCache | None = None
        if state.major < 11:  # removed in 11.x with implicit quantisation
            self.int8_calibrator: Any = None

    def __setattr__(self, key: str, value: Any) -> None:
        if key == "int8_calibrator" and self._s.major >= 11:
            raise AttributeError(
                "'tensorrt.IBuilderConfig' object has no attribute 'int8_calibrator'"
            )
        if key == "int8_calibrator" and value is not None:
            self._s.calls.append(("int8_calibrator", type(value).__name__))
        object.__setattr__(self, key, value)

    def can_run_on_DLA(self, layer: Any) -> bool:
        return can_run_on_dla(self, layer, {f.name for f in self.flags})

    def set_memory_pool_limit(self, pool: Any, size: int) -> None:
        self._s.calls.append(("set_memory_pool_limit", (pool, size)))
        self.pools[pool] = size

    def set_flag(self, flag: Any) -> None:
        self._s.calls.append(("set_flag", flag))
        self.flags.add(flag)

    def get_flag(self, flag: Any) -> bool:
        return flag in self.flags

    def add_optimization_profile(self, profile: Profile) -> int:
        self._s.calls.append(("add_optimization_profile", dict(profile.shapes)))
        if not profile.valid:
            return -1
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def create_timing_cache(self, data: bytes) -> TimingCache | None:
        self._s.calls.append(("create_timing_cache", bytes(data)))
        try:
            return TimingCache(bytes(data))
        except ValueError:  # real TensorRT logs an error and returns None
            self._s.error("timing cache: corrupt or from another TensorRT")
            return None

    def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
        self._s.calls.append(("set_timing_cache", ignore_mismatch))
        self._cache = cache
        return True

    def get_timing_cache(self) -> TimingCache | None:
        return self._cache


class OnnxParser:
    def __init__(self, network: Network, logger: Any) -> None:
        self.network = network
        self.errors: list[_ParserError] = []

    def parse(self, model: bytes) -> bool:
        s = self.network._s
        s.calls.append(("parse", len(model)))
        self.errors = [_ParserError(*e) for e in s.parse_errors]
        try:
            proto = onnx.load_from_string(bytes(model))
        except Exception as e:  # what the real parser reports for non-ONNX bytes
            self.errors.append(_ParserError("MODEL_DESERIALIZE_FAILED", str(e)[:80]))
            return False
        inits = {i.name for i in proto.graph.initializer}
        self.network.inputs = [_tensor(v) for v in proto.graph.input if v.name not in inits]
        self.network.outputs = [_tensor(v) for v in proto.graph.output]
        for t in [*self.network.inputs, *self.network.outputs]:
            t.id = self.network.new_id()
        self.network.parsed_layers = parsed_layers(proto, self.network._m.LayerType)
        self.network.parsed = list(self.network.outputs)
        s.calls.append(("parsed_dtypes", sorted({i.data_type for i in proto.graph.initializer})))
        if self.errors:
            return False
        self.network.onnx = bytes(model)
        return True

    @property
    def num_errors(self) -> int:
        return len(self.errors)

    def get_error(self, i: int) -> _ParserError:
        return self.errors[i]


class Builder:
    def __init__(self, state: _State, mod: Any) -> None:
        if not state.has_device:  # what the real factory does without a CUDA device
            raise TypeError("pybind11::init(): factory function returned nullptr")
        self._s, self._m = state, mod
        self.num_DLA_cores = state.dla_cores
        if state.major < 11:
            self.platform_has_fast_fp16 = state.fast_fp16
            self.platform_has_fast_int8 = state.fast_int8

    def create_network(self, flags: int = 0) -> Network:
        self._s.calls.append(("create_network", flags))
        strongly = int(self._m.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        return Network(self._s, flags, strongly, self._m)

    def create_builder_config(self) -> BuilderConfig:
        return BuilderConfig(self._s, self._m.DeviceType.GPU)

    def create_optimization_profile(self) -> Profile:
        return Profile(self._s)

    def build_serialized_network(self, network: Network, config: BuilderConfig) -> Any:
        s = self._s
        s.calls.append(("build_serialized_network", network.flags))
        problem = self._problem(network, config)
        if problem:
            s.error(problem)
            return None
        if s.build_returns_none:
            return None
        try:
            return self._plan(network, config)
        except _BuildFailed as e:
            s.error(str(e))
            return None

    def _plan(self, network: Network, config: BuilderConfig) -> Any:
        s = self._s
        int8, dla = self._int8_and_dla(network, config)
        if config._cache is not None:
            config._cache.entries["builds"] += 1
        header = {
            "fake": True,
            "format": PLAN_FORMAT,
            "version": s.version,
            "device": {"name": s.gpu.name, "compute_capability": list(s.gpu.compute_capability)},
            "network_flags": network.flags,
            "strongly_typed": network.strongly_typed,
            "builder_flags": sorted(f.name for f in config.flags),
            "profiles": [
                {k: list(map(list, v)) for k, v in p.shapes.items()} for p in config.profiles
            ],
            "int8": int8,
            "dla": dla,
            "inputs": [t.to_json() for t in network.inputs],
            "outputs": [t.to_json() for t in network.outputs],
            "onnx_outputs": {str(t.id): t.onnx_name for t in network.parsed},
            "layers": [layer.to_json({}) for layer in network.topological_layers()],
        }
        s.builds.append(header)
        plan = {**header, "onnx": base64.b64encode(network.onnx or b"").decode("ascii")}
        return _HostMemory(json.dumps(plan).encode())

    def _problem(self, network: Network, config: BuilderConfig) -> str | None:
        """Why TensorRT would refuse this build (it logs and returns None), or None."""
        if network.onnx is None:
            return "network has no layers (the ONNX was not parsed)"
        names = [t.name for t in network.outputs]
        if len(set(names)) != len(names):
            return f"network outputs share a name: {names}"
        problem = network.layer_problem()
        if problem:
            return problem
        for name in ("FP16", "INT8"):
            flag = getattr(self._m.BuilderFlag, name, None)
            if network.strongly_typed and flag is not None and flag in config.flags:
                return f"BuilderFlag::k{name} is not allowed with a strongly typed network"
        inputs = {t.name: t for t in network.inputs}
        dynamic = [t.name for t in network.inputs if -1 in t.shape]
        if dynamic and not config.profiles:
            return f"network has dynamic inputs {dynamic} but no optimization profile"
        for p in config.profiles:
            for name, shapes in p.shapes.items():
                if name not in inputs:
                    return f"optimization profile names {name!r}, which is not a network input"
                declared = inputs[name].shape
                for sh in shapes:
                    if len(sh) != len(declared) or any(
                        d not in (-1, v) for d, v in zip(declared, sh)
                    ):
                        return f"profile shape {sh} for {name} does not match its dims {declared}"
            missing = [n for n in dynamic if n not in p.shapes]
            if missing:
                return f"optimization profile has no shapes for dynamic inputs {missing}"
        return None

    def _int8_and_dla(self, network: Network, config: BuilderConfig) -> tuple[Any, Any]:
        """What the plan records of INT8 (explicit Q/DQ or implicit from the cache) and DLA;
        raises _BuildFailed where TensorRT would fail the build."""
        flags = {f.name for f in config.flags}
        kinds = {layer.type.name for layer in network.all_layers()}
        qdq = bool({"QUANTIZE", "DEQUANTIZE"} & kinds)
        int8: dict[str, Any] | None = None
        if qdq:
            int8 = {"mode": "explicit_qdq", "strongly_typed": network.strongly_typed}
        elif "INT8" in flags:
            problem, int8 = implicit_int8(self._s, network, config)
            if problem:
                raise _BuildFailed(problem)
        dla = None
        if config.default_device_type == self._m.DeviceType.DLA:
            problem, dla = dla_problem(config, network, flags)
            if problem:
                raise _BuildFailed(problem)
        return int8, dla


class _BuildFailed(Exception):
    """A build TensorRT would refuse after looking at the config (it logs, returns None)."""


class Runtime:
    def __init__(self, state: _State, mod: Any, logger: Any) -> None:
        self._s, self._m = state, mod

    def deserialize_cuda_engine(self, plan: Any) -> Engine | None:
        s = self._s
        try:
            desc = json.loads(bytes(plan))
            assert isinstance(desc, dict) and desc.get("format") == PLAN_FORMAT
        except Exception:  # TensorRT: "magic tag does not match"
            s.error("deserialize_cuda_engine: the plan is not a serialized engine")
            return None
        if desc["version"] != s.version:
            s.error(
                "The engine plan file is not compatible with this version of TensorRT, expecting "
                f"library version {s.version} got {desc['version']}, please rebuild."
            )
            return None
        dev = desc["device"]
        if tuple(dev["compute_capability"]) != s.gpu.compute_capability:
            s.error(
                "The engine plan file is generated on an incompatible device, expecting compute "
                f"{s.gpu.compute_capability} got compute {tuple(dev['compute_capability'])}, "
                "please rebuild."
            )
            return None
        if dev["name"] != s.gpu.name:
            s.warning(
                "Using an engine plan file across different models of devices is not recommended"
            )
        return Engine(s, self._m, desc)


class Engine:
    def __init__(self, state: _State, mod: Any, desc: dict[str, Any]) -> None:
        self._s, self._m, self.desc = state, mod, desc
        self.onnx = base64.b64decode(desc["onnx"])
        self._inputs = {t["name"]: t for t in desc["inputs"]}
        self._tensors = [*desc["inputs"], *desc["outputs"]]
        self._session: Any = None
        self.contexts: list[ExecutionContext] = []

    @property
    def num_io_tensors(self) -> int:
        return len(self._tensors)

    @property
    def num_optimization_profiles(self) -> int:
        return max(1, len(self.desc["profiles"]))

    def _tensor(self, name: str) -> dict[str, Any]:
        for t in self._tensors:
            if t["name"] == name:
                return t
        raise RuntimeError(f"engine has no tensor {name!r}")

    def get_tensor_name(self, index: int) -> str:
        return self._tensors[index]["name"]

    def get_tensor_mode(self, name: str) -> Any:
        io = self._m.TensorIOMode
        return io.INPUT if name in self._inputs else io.OUTPUT

    def get_tensor_dtype(self, name: str) -> Any:
        return self._m.DataType[self._tensor(name)["dtype"]]

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._tensor(name)["shape"])

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[tuple[int, ...]]:
        profiles = self.desc["profiles"]
        if name not in self._inputs or profile_index >= len(profiles):
            raise RuntimeError(f"no profile {profile_index} shapes for {name}")
        return [tuple(s) for s in profiles[profile_index][name]]

    def create_execution_context(self) -> ExecutionContext:
        ctx = ExecutionContext(self)
        self.contexts.append(ctx)
        return ctx

    def session(self) -> Any:
        if self._session is None:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            self._session = ort.InferenceSession(
                self.onnx, opts, providers=["CPUExecutionProvider"]
            )
        return self._session


class ExecutionContext:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.input_shapes: list[tuple[int, ...]] = []  # every set_input_shape call, for tests
        self.addresses: dict[str, int] = {}
        self.executions = 0
        self._shapes: dict[str, tuple[int, ...]] = {}

    def set_input_shape(self, name: str, shape: Any) -> bool:
        shape = tuple(int(d) for d in shape)
        self.input_shapes.append(shape)
        eng = self.engine
        if name not in eng._inputs:
            eng._s.error(f"set_input_shape: {name!r} is not an input")
            return False
        declared = eng.get_tensor_shape(name)
        ok = len(shape) == len(declared) and all(d in (-1, v) for d, v in zip(declared, shape))
        if ok and -1 in declared:
            pmin, _, pmax = eng.get_tensor_profile_shape(name, 0)
            ok = all(lo <= v <= hi for lo, v, hi in zip(pmin, shape, pmax))
        if not ok:
            eng._s.error(f"set_input_shape: {shape} for {name} is outside the profile / dims")
            return False
        self._shapes[name] = shape
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        eng = self.engine
        if name in eng._inputs:
            return self._shapes.get(name, eng.get_tensor_shape(name))
        symbols: dict[Any, int] = {}
        for n, t in eng._inputs.items():
            given = self._shapes.get(n, tuple(t["shape"]))
            symbols.update({d: v for d, v in zip(t["dims"], given) if isinstance(d, str)})
        dims = eng._tensor(name)["dims"]
        # Static analysis, as TensorRT does: a dimension named like an input's resolves, one that
        # depends on data (NMS counts) stays -1.
        return tuple(d if isinstance(d, int) else symbols.get(d, -1) for d in dims)

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self.engine._tensor(name)
        self.addresses[name] = int(ptr)
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        eng, gpu = self.engine, self.engine._s.gpu
        names = [t["name"] for t in eng._tensors]
        missing = [
            n for n in eng._inputs if n not in self._shapes and -1 in eng.get_tensor_shape(n)
        ]
        unbound = [n for n in names if n not in self.addresses]
        if missing or unbound:
            eng._s.error(f"execute_async_v3: shapes not set for {missing}, addresses for {unbound}")
            return False
        feed = {}
        for n in eng._inputs:
            shape = self.get_tensor_shape(n)
            dt = np.dtype(_NUMPY[eng._tensor(n)["dtype"]])
            raw = gpu.view(self.addresses[n], int(np.prod(shape)) * dt.itemsize)
            feed[n] = raw.view(dt).reshape(shape).copy()
        sess = eng.session()
        values = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed)))
        env = {int(i): values[name] for i, name in eng.desc.get("onnx_outputs", {}).items()}
        for layer in eng.desc.get("layers", []):
            got = run_layer(layer, [env.get(i) if i is not None else None for i in layer["inputs"]])
            env.update(zip(layer["outputs"], got))
        for t in eng.desc["outputs"]:
            value = env[t["id"]]
            arr = np.ascontiguousarray(value, dtype=np.dtype(_NUMPY[t["dtype"]]))
            gpu.view(self.addresses[t["name"]], arr.nbytes)[:] = arr.reshape(-1).view(np.uint8)
        self.executions += 1
        return True


def make_fake_tensorrt(
    version: str = "10.3.0.30",
    *,
    gpu: FakeGpu | None = None,
    fast_fp16: bool = True,
    fast_int8: bool = True,
    parse_errors: tuple[tuple[str, str, str, str], ...] = (),
    build_returns_none: bool = False,
    dla_cores: int = 0,
    has_device: bool = True,
) -> types.ModuleType:
    """A `tensorrt`-shaped module. Install with monkeypatch.setitem(sys.modules, "tensorrt", m),
    or `cuda_memory_fake.install_fake_tensorrt` (also routes the runtime's device memory here)."""
    state = _State(
        version,
        gpu or FakeGpu(),
        fast_fp16,
        fast_int8,
        parse_errors,
        build_returns_none,
        dla_cores,
        has_device,
    )
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version  # type: ignore[attr-defined]

    class Logger:
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

        def __init__(self, min_severity: int = 2) -> None:
            state.calls.append(("Logger", min_severity))

    def init_libnvinfer_plugins(logger: Any, namespace: str) -> bool:
        """Registers TensorRT's standard plugins (here: EfficientNMS_TRT v1)."""
        state.calls.append(("init_libnvinfer_plugins", namespace))
        state.registry.register_standard()
        return True

    # TensorRT 10.x's values; 11.x removed the precision flags (FP16, INT8)
    flags = {"GPU_FALLBACK": 3} if state.major >= 11 else {"FP16": 0, "INT8": 1, "GPU_FALLBACK": 3}
    algo = algo_type_enum()
    int8_api = calibrator_classes(state, algo) if state.major < 11 else {}
    if state.major < 11:
        int8_api["CalibrationAlgoType"] = algo
    ns: dict[str, Any] = dict(
        **int8_api,
        LayerType=layer_type_enum(),
        Logger=Logger,
        NetworkDefinitionCreationFlag=enum.IntEnum(
            "NetworkDefinitionCreationFlag", {"STRONGLY_TYPED": 1}
        ),
        BuilderFlag=enum.IntEnum("BuilderFlag", flags),
        MemoryPoolType=enum.IntEnum("MemoryPoolType", {"WORKSPACE": 0}),
        DeviceType=enum.IntEnum("DeviceType", {"GPU": 0, "DLA": 1}),
        TensorIOMode=enum.Enum("TensorIOMode", ["NONE", "INPUT", "OUTPUT"]),
        DataType=enum.Enum("DataType", list(_NUMPY)),
        OnnxParser=OnnxParser,
        ElementWiseOperation=enum.IntEnum(
            "ElementWiseOperation",
            ["SUM", "PROD", "MAX", "MIN", "SUB", "DIV", "EQUAL", "GREATER", "LESS"],
        ),
        GatherMode=enum.IntEnum("GatherMode", ["DEFAULT", "ELEMENT", "ND"]),
        ScatterMode=enum.IntEnum("ScatterMode", ["ELEMENT", "ND"]),
        TopKOperation=enum.IntEnum("TopKOperation", ["MAX", "MIN"]),
        ReduceOperation=enum.IntEnum("ReduceOperation", ["SUM", "PROD", "MAX", "MIN", "AVG"]),
        BoundingBoxFormat=enum.IntEnum("BoundingBoxFormat", ["CORNER_PAIRS", "CENTER_SIZES"]),
        PluginFieldType=enum.IntEnum(
            "PluginFieldType", ["FLOAT16", "FLOAT32", "FLOAT64", "INT8", "INT16", "INT32", "CHAR"]
        ),
        PluginField=PluginField,
        PluginFieldCollection=PluginFieldCollection,
        get_plugin_registry=lambda: state.registry,
        init_libnvinfer_plugins=init_libnvinfer_plugins,
        Builder=lambda logger: Builder(state, trt),
        Runtime=lambda logger: Runtime(state, trt, logger),
        IBuilderConfig=BuilderConfig,
        ICudaEngine=Engine,
        IExecutionContext=ExecutionContext,
        calls=state.calls,
        log=state.log,
        builds=state.builds,
        gpu=state.gpu,
    )
    for name, obj in ns.items():
        setattr(trt, name, obj)
    return trt


def read_plan(plan: bytes) -> dict[str, Any]:
    """The header of a fake plan (for tests that check what was built)."""
    desc = json.loads(bytes(plan))
    desc.pop("onnx", None)
    return desc
