"""`python -m runtime.tensorrt model.onnx ...`: build an engine + its sidecar (runtime/tensorrt/cli.py)."""

from __future__ import annotations

import sys

from runtime.tensorrt.cli import main

sys.exit(main())
