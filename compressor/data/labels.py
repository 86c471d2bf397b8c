"""The label check every command that reads labels shares (training, compression, `mtc-eval`):
ground truth that cannot be right is never scored as if it were.

Boxes: clipped to the image where they overlap it; dropped and counted where they lie wholly
outside it or are degenerate (x2 < x1, y2 < y1, zero area). Category names: the BDD taxonomy's
known names that are not merged into a class are *ignored* (counted, no warning); a name the
taxonomy does not know (a typo, another taxonomy) is *unknown*: counted by name and warned about.
Masks: a value outside the layout's declared classes is refused with the file's name unless
`DataConfig.mask_map` maps it explicitly. `strict_labels` turns every counted problem into an
error. The counts go into the evaluation report (`labels` block).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from compressor.data.errors import LabelError
from runtime.spec import VEHICLE_CATEGORIES

# Every box2d category of BDD100K's two releases (YOLOP's 2018 labels and det_20) plus the
# 100k release's rare classes: a name outside this set is a typo or another taxonomy.
KNOWN_CATEGORIES: frozenset[str] = VEHICLE_CATEGORIES | frozenset(
    {
        "person",
        "pedestrian",
        "rider",
        "bike",
        "bicycle",
        "motor",
        "motorcycle",
        "traffic sign",
        "traffic light",
        "other vehicle",
        "other person",
        "trailer",
    }
)
MASK_TASKS: tuple[str, ...] = ("drivable", "lane")

# Problem kinds, in the order the summary names them: (key, singular text, plural text).
_KINDS: tuple[tuple[str, str, str], ...] = (
    ("outside", "box outside the image", "boxes outside the image"),
    ("degenerate", "degenerate box (x2 < x1, y2 < y1 or zero area)", "degenerate boxes"),
    ("clipped", "box clipped to the image", "boxes clipped to the image"),
)


class MaskValueError(LabelError):
    """A drivable/lane mask holds a value outside the layout's declared classes."""


class StrictLabelError(LabelError):
    """strict_labels is on and the labels hold boxes or names that had to be fixed or dropped."""


class LabelIssuesWarning(UserWarning):
    """Boxes were clipped or dropped, or categories were unknown (one warning per split)."""


@dataclass
class LabelTally:
    """What the check did to one split's labels: counts, and which files each came from."""

    counts: Counter[str] = field(default_factory=Counter)
    unknown: Counter[str] = field(default_factory=Counter)
    ignored: Counter[str] = field(default_factory=Counter)
    files: dict[str, set[str]] = field(default_factory=dict)
    boxes_kept: int = 0

    def add(self, kind: str, source: Path | str, name: str | None = None) -> None:
        if kind == "unknown":
            self.unknown[str(name)] += 1
            kind = f"unknown:{name}"
        else:
            self.counts[kind] += 1
        self.files.setdefault(kind, set()).add(str(source))

    @property
    def problems(self) -> int:
        return sum(self.counts.values()) + sum(self.unknown.values())

    def summary(self) -> str | None:
        """'3 boxes outside the image in 2 files, 5 boxes of unknown class 'spaceship' in 1 file
        (e.g. <file>)', or None when the labels needed nothing."""
        parts = []
        for key, one, many in _KINDS:
            if n := self.counts[key]:
                parts.append(f"{n} {one if n == 1 else many}{self._in_files(key)}")
        for name, n in sorted(self.unknown.items(), key=lambda kv: (-kv[1], kv[0])):
            what = "box" if n == 1 else "boxes"
            parts.append(f"{n} {what} of unknown class {name!r}{self._in_files(f'unknown:{name}')}")
        if not parts:
            return None
        first = min(f for files in self.files.values() for f in files)
        return f"{', '.join(parts)} (e.g. {first})"

    def _in_files(self, kind: str) -> str:
        n = len(self.files.get(kind, ()))
        return f" in {n} file{'s' if n != 1 else ''}"

    def to_dict(self) -> dict:
        """The `labels` block of an evaluation report (plain JSON)."""
        return {
            "boxes_kept": self.boxes_kept,
            "clipped": self.counts["clipped"],
            "dropped_outside": self.counts["outside"],
            "dropped_degenerate": self.counts["degenerate"],
            "unknown_classes": dict(sorted(self.unknown.items())),
            "ignored_classes": dict(sorted(self.ignored.items())),
            "files_with_problems": len({f for files in self.files.values() for f in files}),
        }


def check_box(
    box: tuple[float, float, float, float],
    image_wh: tuple[int, int] | None,
    source: Path | str,
    tally: LabelTally | None,
) -> tuple[float, float, float, float] | None:
    """The box clipped to the image, or None (counted) when it is degenerate or wholly outside.
    `image_wh` None: the image size is unknown and only degenerate boxes are dropped."""
    x1, y1, x2, y2 = box
    kind = None
    if not (x2 > x1 and y2 > y1):
        kind = "degenerate"
    elif image_wh is not None:
        w, h = image_wh
        cx1, cy1, cx2, cy2 = max(x1, 0.0), max(y1, 0.0), min(x2, float(w)), min(y2, float(h))
        if not (cx2 > cx1 and cy2 > cy1):
            kind = "outside"
        elif (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2):
            if tally is not None:
                tally.add("clipped", source)
            x1, y1, x2, y2 = cx1, cy1, cx2, cy2
    if kind is not None:
        if tally is not None:
            tally.add(kind, source)
        return None
    return x1, y1, x2, y2


def count_category(name: str, source: Path | str, tally: LabelTally | None) -> bool:
    """True for a category merged into a class; counts an ignored or unknown one."""
    if name in VEHICLE_CATEGORIES:
        return True
    if tally is not None:
        if name in KNOWN_CATEGORIES:
            tally.ignored[name] += 1
        else:
            tally.add("unknown", source, name)
    return False


def report_tally(tally: LabelTally, where: str, strict: bool) -> str | None:
    """The summary line; with `strict`, a StrictLabelError instead."""
    text = tally.summary()
    if text is not None and strict:
        raise StrictLabelError(
            f"{where}: {text}; fix those labels, or drop --strict-labels to clip/drop them "
            f"with a warning"
        )
    return text


# --- masks -----------------------------------------------------------------------------------
MaskMap = tuple[tuple[str, int, int, int], ...]  # (task, first value, last value, class)

_MAP_RE = re.compile(r"^(drivable|lane):(\d+)(?:-(\d+))?=([01])$")


def parse_mask_map(items: Iterable[str] | None) -> MaskMap:
    """`drivable:7=1`, `lane:1-254=1` -> ((task, lo, hi, class), ...): raw mask values lo..hi
    of that task are read as class 0 (background) or 1 (drivable / lane)."""
    out = []
    for item in items or ():
        m = _MAP_RE.match(str(item).strip())
        if m is None:
            raise LabelError(
                f"--mask-map got {item!r}; expected TASK:VALUE=CLASS or TASK:LO-HI=CLASS with "
                f"TASK drivable or lane, values 0-65535 and CLASS 0 or 1, e.g. drivable:7=1"
            )
        task, lo, hi, cls = m.group(1), int(m.group(2)), int(m.group(3) or m.group(2)), int(m[4])
        if hi < lo or hi > 65535:
            raise LabelError(
                f"--mask-map {item!r}: range {lo}-{hi} is empty or above 65535; "
                f"expected LO <= HI <= 65535"
            )
        out.append((task, lo, hi, cls))
    return tuple(out)


def _values(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of a mask and their pixel counts (bincount: fast for uint8)."""
    flat = raw.ravel()
    if raw.dtype == np.uint8:
        counts = np.bincount(flat, minlength=256)
        present = np.flatnonzero(counts)
        return present, counts[present]
    values, counts = np.unique(flat, return_counts=True)
    return values.astype(np.int64), counts


def _fmt_set(values: frozenset[int]) -> str:
    if len(values) > 8:
        return f"{min(values)}-{max(values)}"
    return "{" + ", ".join(str(v) for v in sorted(values)) + "}"


def check_mask(
    raw: np.ndarray,
    task: str,
    declared: tuple[frozenset[int], ...],
    path: Path,
    layout: str,
    mask_map: MaskMap = (),
) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """Refuse a mask with a value outside every declared class set (naming the file, the values
    and how many pixels hold them), unless `mask_map` maps it. Returns the mask with mapped
    values set to 0 (so the layout's decoding sees only declared values) and the mapped ranges
    (lo, hi, class) to apply after decoding. A mask without mapped values is returned as is."""
    maps = [(lo, hi, c) for t, lo, hi, c in mask_map if t == task]
    values, counts = _values(raw)
    mapped = np.zeros(len(values), dtype=bool)
    for lo, hi, _ in maps:
        mapped |= (values >= lo) & (values <= hi)
    rest = {int(v) for v in values[~mapped]}
    if declared and not any(rest <= allowed for allowed in declared):
        bad = sorted(rest - set().union(*declared)) or sorted(rest)
        pixels = int(counts[np.isin(values, bad)].sum())
        shown = ", ".join(str(v) for v in bad[:6]) + (", ..." if len(bad) > 6 else "")
        classes = " or ".join(_fmt_set(a) for a in declared)
        raise MaskValueError(
            f"{path}: {task} mask holds value(s) {shown} ({pixels} pixels) outside the "
            f"{layout} layout's classes {classes}; fix the mask, or map the values explicitly, "
            f"e.g. --mask-map {task}:{bad[0]}=1 (DataConfig.mask_map)"
        )
    if not mapped.any():
        return raw, []
    used = [(lo, hi, c) for lo, hi, c in maps if ((values >= lo) & (values <= hi)).any()]
    cleared = raw.copy()
    for lo, hi, _ in used:
        cleared[(raw >= lo) & (raw <= hi)] = 0
    return cleared, used


def apply_mask_map(
    decoded: np.ndarray, raw: np.ndarray, used: list[tuple[int, int, int]]
) -> np.ndarray:
    """Set the pixels whose raw value a mask_map range covers to that range's class."""
    for lo, hi, cls in used:
        decoded[(raw >= lo) & (raw <= hi)] = cls
    return decoded


def checked_mask_map(value: object, error: type[Exception]) -> tuple[str, ...]:
    """A config's mask_map as its strings (what JSON keeps), refused early as `error`."""
    items = (value,) if isinstance(value, str) else tuple(value or ())  # type: ignore[arg-type]
    try:
        parse_mask_map(str(v) for v in items)
    except LabelError as e:
        raise error(str(e)) from None
    return tuple(str(v) for v in items)
