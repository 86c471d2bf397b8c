"""The label-check flags (compressor.data.labels), written once: `mtc-train` and `mtc-compress`
put `LABEL_FLAGS` in their flag tables, `mtc-eval` adds them with `add_label_flags`."""

from __future__ import annotations

import argparse
from typing import Any

# (flag, dest, argparse options), the shape of the train / compress flag tables
LABEL_FLAGS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    (
        "--strict-labels",
        "strict_labels",
        {
            "action": "store_true",
            "help": "label problems (boxes outside the image, degenerate, unknown classes) are "
            "errors instead of a counted warning",
        },
    ),
    (
        "--mask-map",
        "mask_map",
        {
            "action": "append",
            "metavar": "TASK:VALUE=CLASS",
            "help": "read raw mask values outside the layout's classes as class 0/1, e.g. "
            "drivable:7=1 or lane:1-254=1 (repeat)",
        },
    ),
)


def add_label_flags(p: argparse.ArgumentParser, default: object) -> None:
    for flag, dest, opts in LABEL_FLAGS:
        p.add_argument(flag, dest=dest, default=default, **opts)
