"""The engine's sidecar: the source ONNX's sidecar with what differs for the engine put in (format,
hashes, precision, batch range, the `tensorrt` build facts, NMS appended). mtc-export and the
device build script both write it here; `runtime.sidecar` validates it when the runtime reads
it back."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

from runtime.fileio import atomic_write_bytes, file_sha256
from runtime.io_names import DET_COUNT, DET_OUTPUT
from runtime.tensorrt.builder import BuildInfo, Shapes
from runtime.tensorrt.errors import EngineBuildError
from runtime.tensorrt.nms import NmsSpec


def batch_range(input_shapes: Shapes) -> dict[str, int]:
    """The sidecar's batch range: dimension 0 of the (first) input's profile."""
    lo, opt, hi = next(iter(input_shapes.values()))
    return {"min": int(lo[0]), "opt": int(opt[0]), "max": int(hi[0])}


def engine_sidecar(
    onnx_sidecar: dict[str, Any],
    *,
    engine: Path,
    source_onnx: Path,
    precision: str,
    info: BuildInfo,
    batch: dict[str, int],
    int8: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The engine's sidecar: the source ONNX's, with what differs for the engine put in.
    `runtime.sidecar` validates it when the runtime reads it back. An INT8 engine carries the
    INT8 ONNX's `int8` block (`int8`; default: the source ONNX's own, the Q/DQ ONNX's)."""
    side = dict(onnx_sidecar)
    if precision == "int8":
        side["int8"] = int8 if int8 is not None else side.get("int8")
        if not side["int8"]:
            raise EngineBuildError(
                f"the sidecar of {source_onnx.name} has no 'int8' block (calibration, fallback "
                "layers) for the INT8 engine's sidecar; re-export with mtc-export --int8"
            )
    side.update(
        format="engine",
        artifact=engine.name,
        sha256=file_sha256(engine),
        source_onnx_sha256=file_sha256(source_onnx),
        precision=precision,
        batch=batch,
        tensorrt=info.sidecar_section(),
    )
    if info.nms is not None:
        side.update(_nms_sidecar(side, info.nms, info.nms_rows))
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    side["created_by"] = {**dict(onnx_sidecar.get("created_by") or {}), "time": now}
    return side


def _nms_sidecar(side: dict[str, Any], nms: NmsSpec, rows: int) -> dict[str, Any]:
    """`det` and `outputs` of an engine with NMS appended: what the runtime reads for
    `nms_in_graph` (det [B, K, 6] + det_count [B] int32), the thresholds baked in, the kind."""
    det = {
        **side["det"],
        "nms_in_graph": True,
        "nms_kind": nms.kind,
        "conf_thres": nms.conf_thres,
        "iou_thres": nms.iou_thres,
        "max_det": rows,
    }
    outputs: list[dict[str, Any]] = []
    for out in side["outputs"]:
        if out["name"] != DET_OUTPUT:
            outputs.append(out)
            continue
        outputs.append({**out, "shape": [-1, rows, 6], "dtype": "float32"})
        outputs.append({"name": DET_COUNT, "shape": [-1], "dtype": "int32"})
    return {"det": det, "outputs": outputs}


def write_engine_sidecar(
    engine: Path,
    source_onnx: Path,
    *,
    precision: str,
    info: BuildInfo,
    batch: dict[str, int],
    dest: Path | None = None,
    int8_sidecar: Path | None = None,
) -> Path:
    """Read `<source_onnx>.json`, write the engine's sidecar to `dest` (default
    `<engine>.json`). mtc-export and the shipped build script both write it here.
    `int8_sidecar`: the INT8 ONNX's sidecar whose `int8` block an INT8 engine built from the
    FP32 ONNX (DLA) carries."""
    data = read_sidecar_json(source_onnx.with_name(source_onnx.name + ".json"), source_onnx)
    block = read_sidecar_json(int8_sidecar, None).get("int8") if int8_sidecar is not None else None
    side = engine_sidecar(
        data,
        engine=engine,
        source_onnx=source_onnx,
        precision=precision,
        info=info,
        batch=batch,
        int8=block,
    )
    out = dest or engine.with_name(engine.name + ".json")
    atomic_write_bytes(out, (json.dumps(side, indent=2) + "\n").encode("utf-8"))
    return out


def read_sidecar_json(path: Path, artifact: Path | None) -> dict[str, Any]:
    if not path.is_file():
        what = f" beside {artifact.name}" if artifact is not None else ""
        raise EngineBuildError(
            f"no sidecar {path}{what}: the engine's sidecar is made from it; copy the whole "
            "export folder, or pass --no-sidecar to build the engine alone"
        )
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def int8_sidecar_for(onnx_path: Path) -> Path:
    """The sidecar with the `int8` block for an INT8 engine from `onnx_path`: its own for the
    Q/DQ ONNX (`x_int8.onnx`), else the Q/DQ ONNX's beside it (`x.onnx` -> `x_int8.onnx.json`)."""
    if onnx_path.stem.endswith("_int8"):
        return onnx_path.with_name(onnx_path.name + ".json")
    return onnx_path.with_name(f"{onnx_path.stem}_int8.onnx.json")
