# The two commands a fresh machine needs: `make demo` and `make test`. Each creates .venv and
# installs the project on first use (and again when pyproject.toml changes).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
DEMO_ARGS ?=

.PHONY: install test test-all test-gpu gpu-check lint format demo bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU build of torch first: a bare `torch` requirement would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[all,dev]"
	touch $(STAMP)

install: $(STAMP)

# Fast CPU suite (markers `slow` and `gpu` excluded by pyproject's addopts).
test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

# Everything that runs on CPU, slow tests included.
test-all: $(STAMP)
	$(PY) -m pytest -q -m "not gpu" $(PYTEST_ARGS)

# On a machine with an NVIDIA GPU and TensorRT.
test-gpu: $(STAMP)
	$(PY) -m pytest -q -m gpu -rs $(PYTEST_ARGS)

# The maintainer's GPU check, one command (< 10 min on a workstation GPU): test-gpu + the demo's
# FP16 engines + the latency benchmark on them, as a pass/fail table (docs/ENGINE.md). Without a
# GPU or TensorRT it stops with one line and exit code 2.
GPU_CHECK_ARGS ?=
gpu-check: $(STAMP)
	$(PY) benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

demo: $(STAMP)
	$(VENV)/bin/mtc-demo --overwrite $(DEMO_ARGS)

clean:
	rm -rf $(VENV) demo_out build *.egg-info
