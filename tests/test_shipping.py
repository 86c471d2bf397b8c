"""Docker cannot run here: check Dockerfile.jetson's consistency with the repo instead, and that
the CI entry points call what exists."""

from __future__ import annotations

import json
import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile.jetson"


def _instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def _scripts() -> dict[str, str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def test_base_image_is_a_jetpack6_tensorrt_runtime_tag():
    args = dict(rest.split("=", 1) for op, rest in _instructions() if op == "ARG" and "=" in rest)
    base = args["BASE_IMAGE"]
    assert re.fullmatch(r"nvcr\.io/nvidia/l4t-tensorrt:r10\.3\.\d+-runtime", base), base
    assert ("FROM", "${BASE_IMAGE}") in _instructions()


def test_copied_paths_exist_and_no_torch_side_is_copied():
    copies = [rest.split() for op, rest in _instructions() if op == "COPY"]
    assert copies
    sources = [s for c in copies for s in c[:-1]]
    for src in sources:
        assert (ROOT / src).exists(), f"Dockerfile copies {src}, which is not in the repo"
    assert "compressor" not in sources  # the torch side never ships to the vehicle


def test_entrypoints_are_real_console_scripts_of_torch_free_packages():
    scripts = _scripts()
    ops = _instructions()
    entry = json.loads(next(rest for op, rest in ops if op == "ENTRYPOINT"))
    assert entry[0] in scripts, f"ENTRYPOINT {entry[0]} is not a console script"
    module = scripts[entry[0]].split(":")[0]
    assert module.split(".")[0] == "runtime"
    for name in re.findall(r"--entrypoint (\S+)", DOCKERFILE.read_text()):
        assert name in scripts or name == "python3", f"--entrypoint {name} is not a script"
    for target in scripts.values():
        mod, func = target.split(":")
        path = ROOT / (mod.replace(".", "/") + ".py")
        assert path.is_file(), f"console script target {mod} has no file {path}"
        assert re.search(rf"^def {func}\(", path.read_text(), re.M), f"{target}: no {func}()"


def test_documented_docker_run_uses_nvidia_runtime():
    text = DOCKERFILE.read_text()
    assert "docker run --rm --runtime nvidia" in text


def test_ci_entry_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci and "make lint" in ci
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make demo" in readme
    latency = (ROOT / ".github" / "workflows" / "latency.yml").read_text()
    assert "self-hosted, gpu" in latency and "-m gpu" in latency
    for script in re.findall(r"benchmarks/(\w+\.py)", latency):
        assert (ROOT / "benchmarks" / script).is_file(), script
