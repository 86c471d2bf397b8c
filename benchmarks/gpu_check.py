"""One command for a maintainer with an NVIDIA GPU and TensorRT: `make gpu-check`.

Runs, in order, with a time limit each (about 10 minutes in all on a workstation GPU):
1. preflight: TensorRT imports, a TensorRT builder can be created (CUDA device + driver), the
   runtime's CUDA memory adapter opens, and names the GPU;
2. `make test-gpu` (pytest -m gpu): real engine builds from the export and the runtime, checked
   against ONNX Runtime; a skipped GPU test counts as a failure here (it proved nothing);
3. the demo's FP16 engines: `<demo-out>/export/{teacher,student}_fp16.engine`, built with this
   TensorRT; when missing, a small demo (`mtc-demo --engine fp16`, few images and epochs: it
   exercises the path, it is not the accuracy run) is made in `<work>/demo`;
4. benchmarks/bench_latency.py on those engines: TensorRT FP16 must give finite latencies at
   every batch and be faster per frame than ONNX Runtime on the CPU (a sanity bound, not a target);
5. benchmarks/bench_int8_engine.py on the demo student: a real INT8 engine (from the INT8 ONNX,
   or one quantised there) must agree with the INT8 ONNX in ONNX Runtime and give finite times;
   its speed against the FP16 engine of the same run is reported (ratio), not required.
Prints a pass/fail table, writes `<work>/gpu_check.json`, exits 0 only if every row passed.
Where no GPU or TensorRT is present it stops at the preflight with one line and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXIT_UNAVAILABLE = 2


class Unavailable(Exception):
    """This machine cannot run the check (no TensorRT, no GPU, no CUDA bindings)."""


@dataclass
class Row:
    check: str
    ok: bool
    detail: str
    seconds: float = 0.0


def preflight() -> str:
    """'<GPU> | TensorRT <v> | <memory adapter>' or raise Unavailable with the reason."""
    try:
        import tensorrt as trt
    except Exception as e:  # ImportError, or a broken install raising OSError on its libraries
        raise Unavailable(f"TensorRT's Python package does not import ({e})") from None
    try:
        trt.Builder(trt.Logger(trt.Logger.ERROR))
    except Exception as e:  # no CUDA device / driver: TensorRT raises from its factory
        raise Unavailable(f"TensorRT {trt.__version__} cannot create a builder ({e})") from None
    from runtime.backends.cuda_memory import create_memory
    from runtime.errors import MtcError

    try:
        mem = create_memory("auto")
    except MtcError as e:
        raise Unavailable(f"no CUDA memory adapter: {e}") from None
    try:
        gpu = mem.device_name()
    finally:
        mem.close()
    return f"{gpu} | TensorRT {trt.__version__} | {mem.name}"


def _run(cmd: list[str], timeout: float, log: Path) -> tuple[int | None, str]:
    """Run with a time limit; stdout+stderr go to `log` and are returned. rc None = timed out."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    try:
        done = subprocess.run(
            cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
        out, rc = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as e:
        out, rc = f"{e.stdout or ''}{e.stderr or ''}", None
        out = out.decode(errors="replace") if isinstance(out, bytes) else out
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(out)
    return rc, out


def pytest_counts(output: str) -> dict[str, int]:
    """{'passed': n, 'failed': n, 'skipped': n, 'error': n} from pytest's final summary line."""
    pattern = re.compile(r"(\d+) (passed|failed|skipped|errors?|deselected)\b")
    summaries = [ln for ln in output.splitlines() if pattern.search(ln) and " in " in ln]
    if not summaries:
        return {}
    return {
        kind.rstrip("s") if kind.startswith("error") else kind: int(n)
        for n, kind in pattern.findall(summaries[-1])
    }


def check_gpu_tests(work: Path, timeout: float) -> Row:
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-rs", "-p", "no:cacheprovider"]
    rc, out = _run(cmd, timeout, work / "test_gpu.log")
    took = time.perf_counter() - t0
    if rc is None:
        return Row("make test-gpu", False, f"timed out after {timeout:.0f} s", took)
    c = pytest_counts(out)
    passed, skipped = c.get("passed", 0), c.get("skipped", 0)
    bad = c.get("failed", 0) + c.get("error", 0)
    detail = f"{passed} passed, {skipped} skipped, {bad} failed (log: {work / 'test_gpu.log'})"
    return Row("make test-gpu", rc == 0 and passed > 0 and skipped == 0 and bad == 0, detail, took)


def engines_in(demo: Path) -> dict[str, Path]:
    return {m: demo / "export" / f"{m}_fp16.engine" for m in ("teacher", "student")}


def check_demo_engines(
    demo: Path, work: Path, timeout: float, trt_version: str
) -> tuple[Row, Path]:
    """The demo's engines, made with a small demo in `work/demo` if `demo` has none."""
    t0 = time.perf_counter()
    made = ""
    if not all(p.is_file() for p in engines_in(demo).values()):
        demo = work / "demo"
        cmd = [sys.executable, "-m", "demo.cli", "--out", str(demo), "--engine", "fp16"]
        cmd += ["--n-train", "64", "--n-val", "16", "--teacher-epochs", "2"]
        cmd += ["--distill-epochs", "1", "--quiet"]
        rc, _ = _run(cmd, timeout, work / "demo.log")
        if rc != 0:
            why = "timed out" if rc is None else f"exit {rc}"
            return Row(
                "demo FP16 engines",
                False,
                f"small demo {why} (log: {work / 'demo.log'})",
                time.perf_counter() - t0,
            ), demo
        made = " (small demo made here)"
    found = {}
    for model, path in engines_in(demo).items():
        side = path.with_name(path.name + ".json")
        if not path.is_file() or not side.is_file():
            return Row(
                "demo FP16 engines",
                False,
                f"{path} or its sidecar is missing",
                time.perf_counter() - t0,
            ), demo
        found[model] = json.loads(side.read_text()).get("tensorrt", {}).get("version")
    ok = all(v == trt_version for v in found.values())
    detail = ", ".join(f"{m}: TensorRT {v}" for m, v in found.items()) + made
    if not ok:
        detail += f"; this machine has {trt_version}: rebuild with mtc-export"
    return Row("demo FP16 engines", ok, detail, time.perf_counter() - t0), demo


def check_latency(demo: Path, work: Path, timeout: float) -> list[Row]:
    t0 = time.perf_counter()
    out_json = work / "latency.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_latency.py"), "--demo-out", str(demo)]
    cmd += ["--batches", "1", "4", "8", "--warmup", "5", "--iters", "30", "--json", str(out_json)]
    rc, out = _run(cmd, timeout, work / "latency.log")
    took = time.perf_counter() - t0
    if rc != 0 or not out_json.is_file():
        why = "timed out" if rc is None else f"exit {rc}"
        return [Row("latency benchmark", False, f"{why} (log: {work / 'latency.log'})", took)]
    return latency_rows(json.loads(out_json.read_text())["rows"], took)


def check_trt_nms(work: Path, timeout: float) -> Row:
    """benchmarks/bench_trt_nms.py: both in-engine NMS kinds the installed TensorRT's target
    supports build, run and get a finite time (the comparison with ONNX Runtime + numpy NMS is
    the `gpu` test in tests/export/test_trt_nms.py)."""
    t0 = time.perf_counter()
    out_json = work / "trt_nms.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_trt_nms.py"), "--frames", "30"]
    rc, _ = _run([*cmd, "--out", str(out_json)], timeout, work / "trt_nms.log")
    took = time.perf_counter() - t0
    if rc != 0 or not out_json.is_file():
        why = "timed out" if rc is None else f"exit {rc}"
        return Row("in-engine NMS benchmark", False, f"{why} (log: {work / 'trt_nms.log'})", took)
    rows = [r for r in json.loads(out_json.read_text())["rows"] if r["nms"].startswith("TensorRT")]
    timed = [r for r in rows if "infer_plus_post_ms" in r]
    detail = "; ".join(
        f"{r['case']} {r['nms']}: "
        + (f"{r['infer_plus_post_ms']['p50']:.2f} ms" if r in timed else r["result"])
        for r in rows
    )
    return Row("in-engine NMS benchmark", bool(timed), detail, took)


def check_int8_engine(demo: Path, work: Path, timeout: float) -> Row:
    """benchmarks/bench_int8_engine.py on the demo student: INT8 engine vs INT8 ONNX, and its
    time per frame against the FP16 engine's, in one run."""
    t0 = time.perf_counter()
    out_json = work / "int8_engine.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_int8_engine.py")]
    cmd += ["--onnx", str(demo / "export" / "student.onnx"), "--batches", "1", "4", "8"]
    cmd += ["--warmup", "5", "--iters", "30", "--json", str(out_json)]
    rc, _ = _run(cmd, timeout, work / "int8_engine.log")
    took = time.perf_counter() - t0
    if not out_json.is_file():
        why = "timed out" if rc is None else f"exit {rc}"
        return Row("INT8 engine", False, f"{why} (log: {work / 'int8_engine.log'})", took)
    return int8_row(json.loads(out_json.read_text()), took)


def int8_row(result: dict, took: float = 0.0) -> Row:
    """Passes when the INT8 engine agrees with the INT8 ONNX and every batch has finite times;
    the detail gives the INT8 / FP16 speed-up per batch."""
    agree = result["agreement_vs_int8_onnx"]
    rows = result["rows"]
    finite = bool(rows) and all(
        math.isfinite(r[k]) and r[k] > 0
        for r in rows
        for k in ("fp16_ms_per_frame", "int8_ms_per_frame")
    )
    cells = ", ".join(
        f"b{r['batch']} {r['int8_ms_per_frame']:.2f} vs {r['fp16_ms_per_frame']:.2f} ms/f "
        f"({r['speedup']:.2f}x)"
        for r in rows
    )
    what = "agrees with" if agree["ok"] else "DISAGREES with (" + "; ".join(agree["failures"]) + ")"
    detail = f"{result.get('int8_path')}: {what} the INT8 ONNX; INT8 vs FP16 {cells}"
    return Row("INT8 engine", agree["ok"] and finite, detail, took)


def latency_rows(rows: list[dict], took: float = 0.0) -> list[Row]:
    """Pass/fail of bench_latency's rows: TensorRT FP16 present and finite at every batch, and
    faster per frame than ONNX Runtime FP32 on the CPU."""
    trt = {r["batch"]: r for r in rows if r["backend"] == "TensorRT fp16"}
    ort = {r["batch"]: r for r in rows if r["backend"] == "ORT fp32"}
    keys = ("teacher_ms_per_frame", "student_ms_per_frame")
    finite = bool(trt) and all(math.isfinite(r[k]) and r[k] > 0 for r in trt.values() for k in keys)
    if not finite:
        return [
            Row(
                "latency benchmark",
                False,
                f"no finite TensorRT fp16 rows (batches {sorted(trt)})",
                took,
            )
        ]
    cells = ", ".join(
        f"b{b} {r['student_ms_per_frame']:.2f} ms/f ({r['student_speedup']:.2f}x vs teacher)"
        for b, r in sorted(trt.items())
    )
    faster = [
        b
        for b in trt
        if b in ort and trt[b]["student_ms_per_frame"] < ort[b]["student_ms_per_frame"]
    ]
    sane = Row(
        "TensorRT faster than ORT CPU",
        bool(ort) and sorted(faster) == sorted(b for b in trt if b in ort),
        f"student faster at batches {sorted(faster)} of {sorted(ort)}",
    )
    return [Row("latency benchmark (student, TensorRT fp16)", True, cells, took), sane]


def table(rows: list[Row]) -> str:
    width = max(len(r.check) for r in rows)
    lines = [f"{'check':<{width}}  result  {'time':>6}  detail", "-" * (width + 30)]
    lines += [
        f"{r.check:<{width}}  {'PASS' if r.ok else 'FAIL':<6}  {r.seconds:>5.0f}s  {r.detail}"
        for r in rows
    ]
    return "\n".join(lines)


def run_checks(args: argparse.Namespace) -> int:
    try:
        where = preflight()
    except Unavailable as e:
        print(
            f"gpu-check: cannot run here: {e}; run it on a machine with an NVIDIA GPU, its driver "
            "and TensorRT (pip install tensorrt, or JetPack's python3-libnvinfer)",
            file=sys.stderr,
        )
        return EXIT_UNAVAILABLE
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rows = [Row("preflight", True, where)]
    print(f"gpu-check on {where}", flush=True)
    rows.append(check_gpu_tests(work, args.test_timeout))
    version = where.split("TensorRT ")[1].split(" |")[0]
    engines, demo = check_demo_engines(Path(args.demo_out), work, args.demo_timeout, version)
    rows.append(engines)
    if engines.ok:
        rows += check_latency(demo, work, args.bench_timeout)
        rows.append(check_int8_engine(demo, work, args.bench_timeout))
    else:
        rows.append(Row("latency benchmark", False, "skipped: no demo engines"))
        rows.append(Row("INT8 engine", False, "skipped: no demo export"))
    rows.append(check_trt_nms(work, args.bench_timeout))
    print(table(rows))
    (work / "gpu_check.json").write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
    print(f"wrote {work / 'gpu_check.json'}")
    return 0 if all(r.ok for r in rows) else 1


def main(argv: list[str] | None = None) -> int:
    if str(ROOT) not in sys.path:  # `python benchmarks/gpu_check.py` from a checkout
        sys.path.insert(0, str(ROOT))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo-out", default="demo_out", help="a demo folder with FP16 engines")
    ap.add_argument("--work", default="gpu_check_out", help="logs, small demo, JSON")
    ap.add_argument("--test-timeout", type=float, default=240)
    ap.add_argument("--demo-timeout", type=float, default=180)
    ap.add_argument("--bench-timeout", type=float, default=150)
    return run_checks(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
