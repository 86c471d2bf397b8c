"""benchmarks/gpu_check.py (`make gpu-check`): where there is no GPU or TensorRT it must stop with
one line and exit 2; its table logic is checked on made-up rows. The check itself can only run on
a machine with an NVIDIA GPU and TensorRT (docs/ENGINE.md)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from cuda_memory_fake import install_fake_tensorrt

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gc():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = mod  # dataclasses look their module up while the class is made
    spec.loader.exec_module(mod)
    yield mod
    del sys.modules["gpu_check"]


def test_without_tensorrt_one_line_and_exit_2(tmp_path):
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text("import sys\nsys.modules['tensorrt'] = None\n")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--work", str(tmp_path / "work")],
        env={"PYTHONPATH": f"{shim}:{ROOT}", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("gpu-check: cannot run here: TensorRT's Python package does not import")
    assert "NVIDIA GPU" in line and not (tmp_path / "work").exists()


def test_tensorrt_without_a_gpu_or_cuda_bindings_is_unavailable(gc, monkeypatch, capsys):
    install_fake_tensorrt(monkeypatch, "10.3.0", has_device=False)
    with pytest.raises(gc.Unavailable, match="TensorRT 10.3.0 cannot create a builder"):
        gc.preflight()
    install_fake_tensorrt(monkeypatch, "10.3.0")  # a device, but no real CUDA bindings
    for mod in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart", "pycuda"):
        monkeypatch.setitem(sys.modules, mod, None)
    monkeypatch.setattr("runtime.backends.cuda_memory.AUTO_ORDER", ("cuda-python", "pycuda"))
    with pytest.raises(gc.Unavailable, match="no CUDA memory adapter"):
        gc.preflight()
    assert gc.main(["--work", "unused"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_preflight_names_gpu_tensorrt_and_adapter(gc, monkeypatch):
    install_fake_tensorrt(monkeypatch, "10.3.0")
    assert gc.preflight() == "Fake GPU | TensorRT 10.3.0 | fake"


def _row(backend, batch, teacher, student):
    return {
        "backend": backend,
        "batch": batch,
        "teacher_ms_per_frame": teacher,
        "student_ms_per_frame": student,
        "student_speedup": teacher / student,
    }


def test_latency_rows_pass_and_fail(gc):
    rows = [_row("ORT fp32", b, 9.0, 8.0) for b in (1, 4)]
    good = gc.latency_rows(rows + [_row("TensorRT fp16", b, 1.2, 1.0) for b in (1, 4)])
    assert [r.ok for r in good] == [True, True]
    assert good[0].detail == "b1 1.00 ms/f (1.20x vs teacher), b4 1.00 ms/f (1.20x vs teacher)"
    slow = gc.latency_rows(
        rows + [_row("TensorRT fp16", 1, 9.0, 8.5), _row("TensorRT fp16", 4, 1, 1)]
    )
    assert [r.ok for r in slow] == [True, False] and "batches [4] of [1, 4]" in slow[1].detail
    nan = gc.latency_rows(rows + [_row("TensorRT fp16", 1, float("nan"), 1.0)])
    assert [r.ok for r in nan] == [False]
    assert [r.ok for r in gc.latency_rows(rows)] == [False]  # no engine rows: nothing measured


def test_pytest_summary_and_table(gc):
    out = "....s\n=== 4 passed, 1 skipped, 130 deselected in 41.20s ===\n"
    assert gc.pytest_counts(out) == {"passed": 4, "skipped": 1, "deselected": 130}
    assert gc.pytest_counts("1 failed, 2 errors in 3s") == {"failed": 1, "error": 2}
    assert gc.pytest_counts("no summary") == {}
    text = gc.table(
        [gc.Row("preflight", True, "GPU"), gc.Row("make test-gpu", False, "1 failed", 12)]
    )
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["check", "result", "time"]
    assert lines[2].split()[:2] == ["preflight", "PASS"] and "FAIL" in lines[3]


def test_make_gpu_check_runs_the_script():
    done = subprocess.run(
        ["make", "-n", "gpu-check", "GPU_CHECK_ARGS=--work x"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and "benchmarks/gpu_check.py --work x" in done.stdout


def _int8_result(ok=True, t8=0.5, t16=1.0):
    rows = [
        {"batch": b, "fp16_ms_per_frame": t16, "int8_ms_per_frame": t8, "speedup": t16 / t8}
        for b in (1, 8)
    ]
    agree = {"ok": ok, "failures": [] if ok else ["lane mask agreement 90.0% < 99.0%"]}
    return {"int8_path": "qdq_int8_fp16_flags", "agreement_vs_int8_onnx": agree, "rows": rows}


def test_int8_row_needs_agreement_and_finite_times_and_reports_the_ratio(gc):
    good = gc.int8_row(_int8_result())
    assert good.ok and good.detail == (
        "qdq_int8_fp16_flags: agrees with the INT8 ONNX; INT8 vs FP16 "
        "b1 0.50 vs 1.00 ms/f (2.00x), b8 0.50 vs 1.00 ms/f (2.00x)"
    )
    slower = gc.int8_row(_int8_result(t8=2.0))  # slower than FP16: reported, not a failure
    assert slower.ok and "(0.50x)" in slower.detail
    bad = gc.int8_row(_int8_result(ok=False))
    assert not bad.ok and "DISAGREES with (lane mask agreement 90.0% < 99.0%)" in bad.detail
    assert not gc.int8_row(_int8_result(t8=float("nan"))).ok


def test_int8_benchmark_plumbing_through_the_fake(monkeypatch, tmp_path, capsys):
    """bench_int8_engine.py end to end on the stand-in with the fake TensorRT: it builds both
    engines through the one builder, checks INT8 against the INT8 ONNX and writes its JSON. The
    times are the fake's (ONNX Runtime on CPU) and are not looked at."""
    from runtime.sidecar import BatchRange
    from runtime.testing import StandinConfig, build_standin_onnx, standin_sidecar

    spec = importlib.util.spec_from_file_location(
        "bench_int8", ROOT / "benchmarks" / "bench_int8_engine.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    install_fake_tensorrt(monkeypatch, "10.3.0")
    monkeypatch.setenv("MTC_TIMING_CACHE", str(tmp_path / "tc"))
    cfg = StandinConfig(input_hw=(32, 64), conv_channels=8, batch=BatchRange(1, 1, 2))
    onnx_path = build_standin_onnx(tmp_path / "student.onnx", cfg)
    standin_sidecar(onnx_path, cfg)
    out = tmp_path / "int8.json"
    argv = ["--onnx", str(onnx_path), "--batches", "1", "2", "--warmup", "0", "--iters", "1"]
    argv += ["--work", str(tmp_path / "work")]
    assert bench.main([*argv, "--json", str(out)]) == 0
    result = __import__("json").loads(out.read_text())
    assert result["int8_onnx"].startswith("onnxruntime quantize_static, here")
    assert result["int8_path"] == "qdq_int8_fp16_flags" and result["agreement_vs_int8_onnx"]["ok"]
    assert [r["batch"] for r in result["rows"]] == [1, 2]
    assert "INT8 engine vs INT8 ONNX: ok" in capsys.readouterr().out
