"""The INT8 engine on the export side, through the TensorRT fake: the config rules (`--engine
int8` needs `--int8`; DLA needs one batch size and TensorRT 10.x), the build scripts (trtexec and
the shipped builder) for the Q/DQ ONNX and for DLA, `EngineFromOnnx` picking the ONNX, and the
check of an INT8 engine against the INT8 ONNX in ONNX Runtime. Most tests here quantise the
tiny YOLOP's FP32 export with ONNX Runtime's quantize_static in the layout `--int8` makes; the
end-to-end one runs `mtc-export --int8 --engine int8` itself."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from conftest import IMGSZ, small_config
from cuda_memory_fake import install_fake_tensorrt
from test_tensorrt_engine_path import _fresh_env

from export import export_model
from export.checks.inputs import structured_input
from export.cli import main as export_main
from export.config import ExportConfig, Fp16Thresholds, InputOptions, TensorRTOptions
from export.errors import EngineBuildError, ExportConfigError
from export.onnx.deploy import DeploySpec
from export.summary import EngineSummary
from export.tensorrt.build import EngineBuildConfig, EngineFromOnnx
from export.tensorrt.int8 import (
    Int8Artifacts,
    int8_engine_agreement,
    require_int8_engine_agreement,
)
from export.tensorrt.scripts import (
    build_script_args,
    plan_for_target,
    trtexec_command,
    write_build_script,
)
from runtime import load_artifact
from runtime.fileio import file_sha256
from runtime.sidecar import Int8Info, read_sidecar, sidecar_path
from runtime.tensorrt.calibration import load_calibration_cache, write_calibration_cache
from runtime.testing import quantize_like_int8

T10, T11 = "10.3.0.30", "11.1.0.106"


@pytest.fixture(scope="module")
def int8_export(tiny_ckpt, tmp_path_factory):
    """The tiny YOLOP exported (no engine), plus student_int8.onnx + sidecar + calib, as the
    export folder of `mtc-export --int8` will hold them."""
    out = tmp_path_factory.mktemp("int8exp") / "out"
    export_model(tiny_ckpt, small_config(out, tensorrt={"engine": "none"}))
    int8, amax = quantize_like_int8(
        out / "student.onnx", [structured_input(1, IMGSZ) for _ in range(4)]
    )
    side = json.loads(sidecar_path(out / "student.onnx").read_text())
    info = Int8Info(calibration="max", calib_images=4, calib_cache="student_int8.calib")
    side.update(
        artifact=int8.name,
        sha256=file_sha256(int8),
        precision="int8",
        int8=dataclasses.asdict(info),
    )
    sidecar_path(int8).write_text(json.dumps(side, indent=2))
    read_sidecar(int8)  # a valid INT8 sidecar
    write_calibration_cache(out / "student_int8.calib", amax, trt_version="10.3.0")
    return out


def _cfg(tmp_path: Path, dla: int | None = None, batch=(1, 1, 2)) -> EngineBuildConfig:
    return EngineBuildConfig("int8", "images", (3, *IMGSZ), *batch, 1024, 3, tmp_path / "tc", dla)


# -- config ----------------------------------------------------------------------------------------
def test_engine_int8_without_int8_is_refused_in_one_line(tiny_ckpt, tmp_path):
    with pytest.raises(ExportConfigError, match="--engine int8 builds the INT8 .* only --int8"):
        ExportConfig(tensorrt=TensorRTOptions(engine="int8"))
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = export_main([str(tiny_ckpt), "-o", str(tmp_path / "o"), "--engine", "int8"])
    assert rc == 2 and err.getvalue().count("\n") == 1 and "only --int8 makes" in err.getvalue()
    assert not (tmp_path / "o").exists()  # refused before any work


def test_dla_needs_one_batch_size_unless_no_engine_is_built():
    with pytest.raises(
        ExportConfigError,
        match="DLA runs static shapes only, but the batch range is 1..8; use one batch size",
    ):
        ExportConfig(tensorrt=TensorRTOptions(dla_core=0), input=InputOptions(max_batch=8))
    one_batch = InputOptions(min_batch=2, batch=2, max_batch=2)
    ExportConfig(tensorrt=TensorRTOptions(dla_core=0), input=one_batch)
    ExportConfig(tensorrt=TensorRTOptions(dla_core=0, dry_run=True))
    ExportConfig(tensorrt=TensorRTOptions(dla_core=0, engine="none"))


def test_dla_int8_on_tensorrt_11_and_int8_with_trt_nms_are_refused():
    cfg = ExportConfig(
        tensorrt=TensorRTOptions(dla_core=0), input=InputOptions(min_batch=1, max_batch=1)
    )
    object.__setattr__(cfg, "int8", types.SimpleNamespace(enabled=True))  # the --int8 section
    object.__setattr__(cfg, "tensorrt", dataclasses.replace(cfg.tensorrt, engine="int8"))
    cfg._check_int8_and_dla("10.3")  # implicit INT8 exists there
    nms = ExportConfig()
    object.__setattr__(nms, "int8", types.SimpleNamespace(enabled=True))
    object.__setattr__(
        nms, "tensorrt", dataclasses.replace(nms.tensorrt, engine="int8", nms="auto")
    )
    with pytest.raises(
        ExportConfigError, match="--engine int8 with --trt-nms auto is not supported"
    ):
        nms._check_int8_and_dla("10.3")
    with pytest.raises(ExportConfigError, match="which TensorRT 11 removed; use --trt-target 10.3"):
        cfg._check_int8_and_dla("11")


# -- build scripts ---------------------------------------------------------------------------------
def test_scripts_build_the_qdq_onnx_per_target_and_dla_from_the_cache(tmp_path):
    cfg = _cfg(tmp_path)
    p10 = plan_for_target("s", "int8", "10.3", True, None, calib="s_int8.calib")
    assert (p10.onnx, p10.engine, p10.engine_precision, p10.calib) == (
        "s_int8.onnx",
        "s_int8.engine",
        "int8",
        None,
    )
    cmd = trtexec_command(p10, cfg)
    assert cmd[1:3] == ["--onnx=s_int8.onnx", "--saveEngine=s_int8.engine"]
    assert cmd[3:5] == ["--int8", "--fp16"] and not any("calib" in c for c in cmd)
    assert build_script_args(p10, cfg)[:4] == [
        "s_int8.onnx",
        "--engine",
        "s_int8.engine",
        "--precision",
    ]
    p11 = plan_for_target("s", "int8", "11", True, None)
    assert trtexec_command(p11, cfg)[3] == "--stronglyTyped" and "--int8" not in trtexec_command(
        p11, cfg
    )
    dla_cfg = _cfg(tmp_path, dla=1, batch=(2, 2, 2))
    dla = plan_for_target("s", "int8", "10.3", True, None, dla=True, calib="s_int8.calib")
    cmd = trtexec_command(dla, dla_cfg)
    assert cmd[1] == "--onnx=s.onnx"
    assert cmd[3:6] == ["--int8", "--fp16", "--calib=s_int8.calib"]
    assert cmd[-2:] == ["--useDLACore=1", "--allowGPUFallback"]
    args = build_script_args(dla, dla_cfg)
    assert args[:4] == ["s.onnx", "--engine", "s_int8.engine", "--precision"] and args[4] == "int8"
    assert args[args.index("--calib") + 1] == "s_int8.calib" and "--dla-core" in args


# -- the build from the export's files -------------------------------------------------------------
def test_engine_from_onnx_picks_the_qdq_onnx_or_the_fp32_onnx_and_cache(
    int8_export, monkeypatch, tmp_path
):
    out = int8_export
    fake = install_fake_tensorrt(monkeypatch, T10, dla_cores=2)
    art = Int8Artifacts.beside(out, "student")
    assert art.calib == out / "student_int8.calib"  # the name the INT8 sidecar gives
    onnx_int8, calib = art.loaders()
    fp32 = (out / "student.onnx").read_bytes
    built = EngineFromOnnx(fp32, None, _cfg(tmp_path), lambda: "G", None, onnx_int8, calib)()
    assert built.source == "int8_onnx" and built.int8_path == "qdq_int8_fp16_flags"
    assert fake.trt.builds[-1]["int8"]["mode"] == "explicit_qdq"
    dla_cfg = _cfg(tmp_path, dla=0, batch=(1, 1, 1))
    built = EngineFromOnnx(fp32, None, dla_cfg, lambda: "G", None, onnx_int8, calib)()
    assert built.source == "fp32_onnx" and built.int8_path == "implicit_calib_cache"
    assert fake.trt.builds[-1]["int8"]["mode"] == "implicit" and built.dla_gpu_layers
    with pytest.raises(EngineBuildError, match="none was made; add --int8 --calib-data DIR"):
        EngineFromOnnx(fp32, None, _cfg(tmp_path), lambda: "G")()
    with pytest.raises(EngineBuildError, match="needs the calibration cache that --int8 writes"):
        EngineFromOnnx(fp32, None, dla_cfg, lambda: "G", None, onnx_int8, None)()
    with pytest.raises(EngineBuildError, match="student_int8.onnx .* did not write; add --int8"):
        Int8Artifacts.beside(tmp_path, "student").require()


def _spec() -> DeploySpec:
    return DeploySpec(input_hw=IMGSZ, det_raw=False, det_decoder="yolop_anchor")


def test_int8_engine_is_checked_against_the_int8_onnx(int8_export, monkeypatch, tmp_path):
    out = int8_export
    install_fake_tensorrt(monkeypatch, T10)
    onnx_int8, _ = Int8Artifacts.beside(out, "student").loaders()
    built = EngineFromOnnx(
        (out / "student.onnx").read_bytes, None, _cfg(tmp_path), lambda: "G", None, onnx_int8
    )()
    engine = tmp_path / "student_int8.engine"
    engine.write_bytes(built.plan)
    from runtime.tensorrt.engine_sidecar import write_engine_sidecar

    write_engine_sidecar(
        engine,
        out / "student_int8.onnx",
        precision="int8",
        info=built.info,
        batch={"min": 1, "opt": 1, "max": 2},
    )
    cases = [("probe", structured_input(2, IMGSZ))]
    th = Fp16Thresholds(min_mask_agreement_pct=99.9, min_mean_iou=0.999, max_score_delta=1e-6)
    with load_artifact(engine) as eng:
        rep = int8_engine_agreement(eng.infer, out / "student_int8.onnx", cases, _spec(), th)
        assert rep.ok and rep.boxes_compared > 0  # same ONNX in ORT under the fake
        require_int8_engine_agreement(rep, out / "student_int8.onnx")

        def flipped(images):
            got = dict(eng.infer(images))
            got["drivable"] = 1 - got["drivable"]
            return got

        bad = int8_engine_agreement(flipped, out / "student_int8.onnx", cases, _spec(), th)
    assert not bad.ok and any("drivable" in f for f in bad.failures)
    with pytest.raises(EngineBuildError, match="INT8 engine disagrees with student_int8.onnx"):
        require_int8_engine_agreement(bad, out / "student_int8.onnx")
    summary = EngineSummary("10.3", "int8", None, "trtexec", "a.sh", "b.py")
    summary.mark_built(built, rep)
    summary.parity_reference = "onnx_int8"
    d = summary.to_dict()
    assert d["parity_vs_onnx_int8"]["ok"] and "parity_vs_onnx_fp32" not in d


# -- the shipped build script on the target: TensorRT only, no torch, no mtc -----------------------
@pytest.mark.parametrize("dla", [False, True])
def test_shipped_int8_build_script_builds_what_the_runtime_runs(
    int8_export, tmp_path, monkeypatch, dla
):
    work = tmp_path / "target"
    shutil.copytree(int8_export, work)
    batch = (1, 1, 1) if dla else (1, 1, 2)
    cfg = _cfg(tmp_path, dla=0 if dla else None, batch=batch)
    plan = plan_for_target(
        "student", "int8", "10.3", True, None, dla=dla, calib="student_int8.calib"
    )
    script = write_build_script(work / "student_build_engine.py", plan, cfg)
    env = _fresh_env(tmp_path, T10, block="torch,compressor,export,runtime")
    if dla:  # the fake in the fresh interpreter: a device with DLA cores
        shim = Path(env["PYTHONPATH"].split(":")[0]) / "tensorrt.py"
        shim.write_text(shim.read_text().replace(f"({T10!r})", f"({T10!r}, dla_cores=2)"))
    done = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    engine = work / "student_int8.engine"
    sc = read_sidecar(engine)
    assert sc.precision == "int8" and sc.int8.calib_cache == "student_int8.calib"
    want_path = "implicit_calib_cache" if dla else "qdq_int8_fp16_flags"
    assert sc.tensorrt.int8_path == want_path and (sc.tensorrt.dla_gpu_layers is not None) == dla
    source = "student.onnx" if dla else "student_int8.onnx"
    assert sc.source_onnx_sha256 == file_sha256(work / source)
    install_fake_tensorrt(monkeypatch, T10)
    x = structured_input(1, IMGSZ)
    with load_artifact(engine) as eng, load_artifact(work / source) as ref:
        got, want = eng.infer(x), ref.infer(x)
    for name in want:  # the fake computes its source ONNX: the Q/DQ one, or (DLA) the FP32 one
        np.testing.assert_array_equal(got[name], want[name])


def test_mtc_export_engine_int8_stage_builds_checks_and_keeps_the_engine(
    tiny_ckpt, tmp_path, monkeypatch
):
    """`--int8 --engine int8` end to end through the fake: the guarded INT8 ONNX, its sidecar
    and calibration cache are written, the engine is built from the Q/DQ ONNX, checked against
    it, and `mtc-eval` scores the engine exactly as it scores the INT8 ONNX."""
    from conftest import synth_data

    from compressor.train import EvalConfig, EvalJob, evaluate_path
    from export.config import Int8Budgets, Int8Options

    data = synth_data(tmp_path / "data")
    out = tmp_path / "out"
    cfg = small_config(out, tensorrt={"engine": "none"})
    budgets = dict(det_recall=100.0, det_map50=100.0, drivable_miou=100.0, lane_iou=100.0)
    int8 = Int8Options(
        enabled=True,
        calib_data=str(data),
        calib_images=6,
        calib_batch=2,
        budgets=Int8Budgets(**budgets),
    )
    cfg = ExportConfig(
        output=cfg.output,
        input=cfg.input,
        checks=cfg.checks,
        tensorrt=dataclasses.replace(cfg.tensorrt, engine="int8"),
        int8=int8,
    )
    install_fake_tensorrt(monkeypatch, T10)
    result = export_model(tiny_ckpt, cfg)
    cache = load_calibration_cache(out / "student_int8.calib")
    assert "images" in cache.scales and len(cache.scales) > 10
    engine = out / "student_int8.engine"
    sc = read_sidecar(engine)
    assert sc.precision == "int8" and sc.tensorrt.int8_path == "qdq_int8_fp16_flags"
    assert sc.int8.calib_cache == "student_int8.calib"
    assert sc.source_onnx_sha256 == file_sha256(out / "student_int8.onnx")
    eng = result.summary["engine"]
    assert eng["status"] == "built" and eng["parity_vs_onnx_int8"]["ok"]
    assert "parity_vs_onnx_fp32" not in eng and "INT8" in eng["build_flags"]
    assert eng["trtexec"].startswith("trtexec --onnx=student_int8.onnx --saveEngine=student_int8")
    script = (out / "student_build_engine.py").read_text()
    assert (
        "['student_int8.onnx', '--engine', 'student_int8.engine', '--precision', 'int8'" in script
    )
    x = structured_input(2, IMGSZ)
    with load_artifact(engine) as be, load_artifact(out / "student_int8.onnx") as ref:
        got, want = be.infer(x), ref.infer(x)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])
    scores = {}
    for art in (engine, out / "student_int8.onnx"):
        job = EvalJob(checkpoint=str(art), data=str(data), eval=EvalConfig(progress=False))
        scores[art.suffix] = evaluate_path(job)
    assert scores[".engine"]["summary"] == scores[".onnx"]["summary"]
    assert scores[".engine"]["artifact"]["format"] == "engine"
    scores = {}
    for art in (engine, out / "student_int8.onnx"):
        job = EvalJob(checkpoint=str(art), data=str(data), eval=EvalConfig(progress=False))
        scores[art.suffix] = evaluate_path(job)
    assert scores[".engine"]["summary"] == scores[".onnx"]["summary"]
    assert scores[".engine"]["artifact"]["format"] == "engine"
