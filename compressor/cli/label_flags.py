"""The label-check flags of `mtc-eval` (mtc-train and mtc-compress list the same two in their
flag tables): see compressor.data.labels."""

from __future__ import annotations

import argparse


def add_label_flags(p: argparse.ArgumentParser, default: object) -> None:
    p.add_argument(
        "--strict-labels",
        dest="strict_labels",
        action="store_true",
        default=default,
        help="label problems (boxes outside the image, degenerate, unknown classes) are errors "
        "instead of a counted warning",
    )
    p.add_argument(
        "--mask-map",
        dest="mask_map",
        action="append",
        metavar="TASK:VALUE=CLASS",
        default=default,
        help="read raw mask values outside the layout's classes as class 0/1, e.g. drivable:7=1 "
        "or lane:1-254=1 (repeat)",
    )
