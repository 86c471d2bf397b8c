"""The engine path end to end on CPU, through the one TensorRT fake (tests/fakes): `mtc-export
CKPT --engine fp16` -> `.engine` + sidecar -> `mtc-run` / `runtime.load_artifact` gives what ONNX
Runtime gives on the ONNX the engine was built from. The fake runs that ONNX in ONNX Runtime, so
this checks our build, sidecar, buffer and pipeline plumbing, never TensorRT's numerics
(tests/export/test_gpu.py and `make gpu-check` do that on a GPU)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from conftest import IMGSZ
from cuda_memory_fake import install_fake_tensorrt
from tensorrt_fake import read_plan

from export.checks.inputs import structured_input
from export.cli import main as export_main
from runtime import load_artifact, run
from runtime.cli import main as run_main
from runtime.fileio import file_sha256
from runtime.sidecar import read_sidecar, sidecar_path
from runtime.tensorrt.bundle import bundle_modules
from runtime.tensorrt.cli import main as trt_build_main

RANDOM_FP16 = ["--fp16-min-mask-agreement", "95", "--fp16-min-iou", "0.5"]
RANDOM_FP16 += ["--fp16-max-score-delta", "1"]  # see conftest.RANDOM_MODEL_FP16
# The engine's sidecar is the source ONNX's with exactly these keys changed.
ENGINE_KEYS = {"format", "artifact", "sha256", "precision", "tensorrt", "source_onnx_sha256"}
CASES = {"10.3.0.30": ("student.onnx", "builder_flag"), "11.1.0.106": ("student_fp16.onnx", None)}


def _call(main, argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def _frames(folder: Path, n: int = 3) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        img = rng.integers(0, 255, (96, 160, 3), dtype=np.uint8)
        img[40:70, 30:90] = (40, 200, 220)  # a bright block: boxes and masks change around it
        cv2.imwrite(str(folder / f"f{i}.png"), img)
    return folder


@pytest.fixture(scope="module", params=sorted(CASES))
def engine_export(request, tiny_ckpt, tmp_path_factory):
    """`mtc-export CKPT --engine fp16` with the fake TensorRT of one version installed."""
    version = request.param
    out = tmp_path_factory.mktemp(f"trt{version.split('.')[0]}") / "out"
    with pytest.MonkeyPatch.context() as mp:
        fake = install_fake_tensorrt(mp, version)
        argv = [tiny_ckpt, "-o", out, "--engine", "fp16", "--max-batch", "2", "--no-progress"]
        argv += ["--timing-cache", out.parent / "timing", *RANDOM_FP16]
        rc, stdout, stderr = _call(export_main, argv)
    assert rc == 0, stderr
    return version, out, fake, stdout


def test_export_writes_the_engine_the_fake_built(engine_export):
    version, out, fake, stdout = engine_export
    source, fp16_path = CASES[version]
    engine = out / "student_fp16.engine"
    plan = read_plan(engine.read_bytes())
    [built] = fake.trt.builds
    assert plan == built  # the file on disk is what build_serialized_network returned
    assert plan["version"] == version and plan["device"]["name"] == "Fake GPU"
    assert plan["profiles"] == [{"images": [[1, 3, *IMGSZ], [1, 3, *IMGSZ], [2, 3, *IMGSZ]]}]
    assert plan["builder_flags"] == (["FP16"] if fp16_path else [])
    assert plan["strongly_typed"] == (fp16_path is None)
    parsed = onnx.load_from_string(
        __import__("base64").b64decode(json.loads(engine.read_bytes())["onnx"])
    )
    assert parsed == onnx.load(str(out / source))  # built from the ONNX the sidecar names
    summary = json.loads((out / "export_summary.json").read_text())
    assert summary["engine"]["status"] == "built" and summary["engine"]["parity_vs_onnx_fp32"]["ok"]
    assert "student_fp16.engine" in stdout


def test_engine_sidecar_is_the_source_onnx_sidecar_plus_the_build(engine_export):
    version, out, fake, _ = engine_export
    source, _ = CASES[version]
    engine = out / "student_fp16.engine"
    raw = json.loads(sidecar_path(engine).read_text())
    onnx_side = json.loads(sidecar_path(out / source).read_text())
    sc = read_sidecar(engine)  # schema-valid, hash matches

    def keys(d, prefix=""):
        return {prefix + k for k in d} | {
            kk for k, v in d.items() if isinstance(v, dict) for kk in keys(v, f"{prefix}{k}.")
        }

    assert keys(raw) == keys(sc.to_dict())  # every field written, none left to a default
    changed = {k for k in raw if raw[k] != onnx_side[k] and k not in ("created_by", "batch")}
    assert changed | {"precision"} == ENGINE_KEYS  # the FP16 ONNX's sidecar already says fp16
    assert (sc.format, sc.precision, sc.sha256) == ("engine", "fp16", file_sha256(engine))
    assert sc.source_onnx_sha256 == file_sha256(out / source)
    major = version.split(".")[0]
    flags = ["workspace=4096MiB", "opt_level=3"] + (["FP16"] if major == "10" else [])
    flags += ["profile=1/1/2"] + (["STRONGLY_TYPED"] if major == "11" else [])
    assert raw["tensorrt"] == {
        "version": version,
        "gpu": "Fake GPU",
        "build_flags": flags,
        "fp16_path": "builder_flag" if major == "10" else "strongly_typed_fp16_onnx",
        "timing_cache": str(out.parent / "timing" / f"timing_fake-gpu_trt{version}.cache"),
        "dla_core": None,
        "int8_path": None,
        "dla_gpu_layers": None,
    }
    assert raw["batch"] == {"min": 1, "opt": 1, "max": 2}
    assert Path(raw["tensorrt"]["timing_cache"]).is_file()


def test_engine_results_equal_onnxruntime_on_its_source_onnx(engine_export, monkeypatch):
    version, out, _, _ = engine_export
    install_fake_tensorrt(monkeypatch, version)
    x = structured_input(2, IMGSZ)
    with (
        load_artifact(out / "student_fp16.engine") as eng,
        load_artifact(out / CASES[version][0]) as ref,
    ):
        assert eng.name == "tensorrt" and ref.name == "onnxruntime"
        got, want = eng.infer(x), ref.infer(x)
        got1, want1 = eng.infer(x[:1]), ref.infer(x[:1])  # new batch: shape set, buffers reused
    assert set(got) == set(want) == {"det", "drivable", "lane"}
    for name in want:
        assert got[name].dtype == want[name].dtype and got[name].shape == want[name].shape
        np.testing.assert_array_equal(got[name], want[name])
        np.testing.assert_array_equal(got1[name], want1[name])


def test_mtc_run_on_the_engine_gives_the_onnx_results(engine_export, monkeypatch, tmp_path):
    version, out, _, _ = engine_export
    install_fake_tensorrt(monkeypatch, version)
    frames = _frames(tmp_path / "frames")
    saved = {}
    for art in ("student_fp16.engine", CASES[version][0]):
        save, report = tmp_path / art.replace(".", "_"), tmp_path / f"{art}.json"
        argv = [out / art, "--source", frames, "--batch", "2", "--quiet"]
        rc, _, err = _call(run_main, [*argv, "--save", save, "--report", report])
        assert rc == 0, err
        info = json.loads(report.read_text())["info"]
        assert info["frames_processed"] == 3
        saved[art] = {p.name: p.read_bytes() for p in sorted(save.iterdir())}
    engine_info = json.loads((tmp_path / "student_fp16.engine.json").read_text())["info"]
    assert engine_info["backend"] == "tensorrt" and engine_info["tensorrt_version"] == version
    onnx_name = CASES[version][0]
    assert len(saved[onnx_name]) == 3 and saved["student_fp16.engine"] == saved[onnx_name]
    eng = run(out / "student_fp16.engine", [cv2.imread(str(p)) for p in sorted(frames.iterdir())])
    ref = run(out / onnx_name, [cv2.imread(str(p)) for p in sorted(frames.iterdir())])
    for a, b in zip(eng.results, ref.results, strict=True):
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.scores, b.scores)
        np.testing.assert_array_equal(a.drivable, b.drivable)
        np.testing.assert_array_equal(a.lane, b.lane)


def _rebuild(out: Path, tmp_path: Path, edit) -> Path:
    """Copy the export, edit the FP32 ONNX's tensors (not its sidecar), rebuild the engine with
    `python -m runtime.tensorrt` through the same builder."""
    work = tmp_path / "work"
    shutil.copytree(out, work)
    model = onnx.load(str(work / "student.onnx"))
    edit(model)
    onnx.save(model, str(work / "student.onnx"))
    rc, _, err = _call(trt_build_main, [work / "student.onnx", "--cache-dir", tmp_path / "tc"])
    assert rc == 0, err
    return work / "student_fp16.engine"


def _rename(model, old, new):
    for node in model.graph.node:
        node.output[:] = [new if o == old else o for o in node.output]
        node.input[:] = [new if i == old else i for i in node.input]
    for v in [*model.graph.input, *model.graph.output]:
        if v.name == old:
            v.name = new


def test_renamed_output_fails_the_run_with_one_line(engine_export, monkeypatch, tmp_path):
    version, out, _, _ = engine_export
    install_fake_tensorrt(monkeypatch, version)
    engine = _rebuild(out, tmp_path, lambda m: _rename(m, "lane", "lane_mask"))
    assert read_sidecar(engine).output("lane") is not None  # the sidecar still promises `lane`
    rc, _, err = _call(run_main, [engine, "--source", _frames(tmp_path / "fr", 1), "--quiet"])
    assert rc == 2 and err.count("\n") == 1
    assert "the sidecar promises outputs" in err and "lane_mask" in err


def test_renamed_input_fails_the_build_with_one_line(engine_export, monkeypatch, tmp_path):
    version, out, _, _ = engine_export
    fake = install_fake_tensorrt(monkeypatch, version)
    work = tmp_path / "work"
    shutil.copytree(out, work)
    model = onnx.load(str(work / "student.onnx"))
    _rename(model, "images", "input")
    onnx.save(model, str(work / "student.onnx"))
    rc, _, err = _call(trt_build_main, [work / "student.onnx", "--cache-dir", tmp_path / "tc"])
    assert rc == 2 and err.count("\n") == 1
    assert "profile names input(s) ['images'] but the ONNX's inputs are ['input']" in err
    assert [k for k, _ in fake.trt.calls].count("build_serialized_network") == 0
    assert (work / "student_fp16.engine").read_bytes() == (out / "student_fp16.engine").read_bytes()


# -- the device build script: the same builder, in a fresh interpreter without torch -------------
SITECUSTOMIZE = """import os, sys
for name in os.environ["MTC_TEST_BLOCK"].split(","):
    sys.modules[name] = None  # `import name` raises ImportError in this interpreter
"""
TENSORRT_SHIM = """import sys
sys.path.insert(0, {fakes!r})
from tensorrt_fake import make_fake_tensorrt
sys.modules[__name__] = make_fake_tensorrt({version!r})
"""


def _fresh_env(tmp_path: Path, version: str, block: str, extra_path: str = "") -> dict:
    """PYTHONPATH with a `tensorrt` that is the fake, a sitecustomize that blocks `block`, and an
    `nvidia-smi` on PATH that names the fake GPU (as the export's adapter did)."""
    shim = tmp_path / "shim"
    (shim / "bin").mkdir(parents=True)
    (shim / "sitecustomize.py").write_text(SITECUSTOMIZE)
    fakes = str(Path(__file__).parents[1] / "fakes")
    (shim / "tensorrt.py").write_text(TENSORRT_SHIM.format(fakes=fakes, version=version))
    smi = shim / "bin" / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'Fake GPU'\n")
    smi.chmod(0o755)
    return {
        "PYTHONPATH": os.pathsep.join(p for p in (str(shim), extra_path) if p),
        "PATH": f"{shim / 'bin'}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "MTC_TEST_BLOCK": block,
        "MTC_TIMING_CACHE": str(tmp_path / "tc"),
    }


def _without_engine(out: Path, tmp_path: Path) -> Path:
    work = tmp_path / "target"
    shutil.copytree(out, work)
    for p in work.glob("student_fp16.engine*"):
        p.unlink()
    return work


def _same_build(work: Path, out: Path, tmp_path: Path, version: str) -> None:
    """Byte-identical engine; sidecar identical but for its time and the timing cache path."""
    engine = work / "student_fp16.engine"
    assert engine.read_bytes() == (out / "student_fp16.engine").read_bytes()
    got = json.loads(sidecar_path(engine).read_text())
    want = json.loads(sidecar_path(out / "student_fp16.engine").read_text())
    for side in (got, want):
        side["created_by"].pop("time")
    cache = tmp_path / "tc" / f"timing_fake-gpu_trt{version}.cache"
    assert got["tensorrt"].pop("timing_cache") == str(cache) and cache.is_file()
    want["tensorrt"].pop("timing_cache")
    assert got == want
    read_sidecar(engine)  # schema-valid, hash matches


def test_shipped_build_script_is_the_builder_modules(engine_export):
    version, out, _, _ = engine_export
    source = CASES[version][0]
    fp16_path = CASES[version][1] or "strongly_typed_fp16_onnx"
    script = (out / "student_build_engine.py").read_text()
    # generated from runtime/tensorrt's modules (and the few they import), each exactly once
    modules = bundle_modules()
    assert Path(trt_build_main.__code__.co_filename) == modules[-1].path
    for module in modules:
        assert script.count(module.body.strip("\n")) == 1, module.name
    [args_line] = [ln for ln in script.splitlines() if ln.startswith("SHIPPED_ARGS")]
    assert f"['{source}', '--engine', 'student_fp16.engine'" in args_line
    assert f"'--fp16-path', '{fp16_path}'" in args_line
    assert "'--max-shapes', 'images:2x3x64x128'" in args_line
    # the target table travels with the script (it runs where mtc is not installed)
    assert script.count("\nTARGETS: Registry[TrtTarget] = Registry(\n") == 1
    assert script.count("\nclass Registry(Generic[T]):\n") == 1


def test_shipped_build_script_without_torch_or_mtc_builds_what_mtc_export_built(
    engine_export, tmp_path, monkeypatch
):
    version, out, _, _ = engine_export
    work = _without_engine(out, tmp_path)
    env = _fresh_env(tmp_path, version, block="torch,compressor,export,runtime")
    done = subprocess.run(
        [sys.executable, str(work / "student_build_engine.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        f"wrote {work / 'student_fp16.engine'} and {work / 'student_fp16.engine.json'}"
    )
    _same_build(work, out, tmp_path, version)
    install_fake_tensorrt(monkeypatch, version)
    x = structured_input(2, IMGSZ)
    with (
        load_artifact(work / "student_fp16.engine") as eng,
        load_artifact(work / CASES[version][0]) as ref,
    ):
        got, want = eng.infer(x), ref.infer(x)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])


def test_python_m_runtime_tensorrt_without_torch_builds_what_mtc_export_built(
    engine_export, tmp_path
):
    version, out, _, _ = engine_export
    if not version.startswith("10"):
        pytest.skip("the 11.x recipe needs --fp16-path; one line shows the entry point")
    work = _without_engine(out, tmp_path)
    root = str(Path(__file__).parents[2])
    env = _fresh_env(tmp_path, version, block="torch,compressor,export", extra_path=root)
    done = subprocess.run(
        [sys.executable, "-m", "runtime.tensorrt", str(work / "student.onnx")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    _same_build(work, out, tmp_path, version)


def test_shipped_script_without_the_onnx_sidecar_fails_in_one_line(engine_export, tmp_path):
    version, out, _, _ = engine_export
    work = _without_engine(out, tmp_path)
    source = CASES[version][0]
    (work / f"{source}.json").unlink()
    env = _fresh_env(tmp_path, version, block="torch,compressor,export,runtime")
    done = subprocess.run(
        [sys.executable, str(work / "student_build_engine.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert done.stderr.startswith(f"error: no sidecar {work / (source + '.json')}")
    assert not (work / "student_fp16.engine").exists()
