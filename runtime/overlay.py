"""Visual overlays: drivable area and lanes alpha-blended in colour, boxes with scores, written to
a folder of JPEGs or one MP4 (chosen by the path's suffix through a registry)."""

from __future__ import annotations

import os
import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from runtime.errors import MtcError
from runtime.fileio import atomic_write_bytes, normal_permissions, remove_stale_temps
from runtime.postprocess import FrameResult
from runtime.sources import FrameId


class SinkError(MtcError):
    """The overlay destination cannot be written."""


@dataclass(frozen=True)
class OverlayStyle:
    alpha: float = 0.45
    min_score: float = 0.25  # boxes below are not drawn (the sidecar's conf may be 0.001)
    drivable_bgr: tuple[int, int, int] = (60, 180, 60)
    lane_bgr: tuple[int, int, int] = (40, 40, 230)
    box_bgr: tuple[int, int, int] = (255, 160, 0)
    thickness: int = 2


def draw_overlay(
    frame: np.ndarray,
    result: FrameResult,
    style: OverlayStyle | None = None,
    class_names: tuple[str, ...] = (),
) -> np.ndarray:
    st = style or OverlayStyle()
    out = frame.copy()
    tint = np.empty_like(out)
    for mask, color in ((result.drivable, st.drivable_bgr), (result.lane, st.lane_bgr)):
        if mask is None:
            continue
        # OpenCV blend + masked copy: whole-frame passes in C that release the GIL (the drawing
        # runs beside inference when the stages overlap); 2-3x faster than boolean indexing.
        tint[:] = color
        blended = cv2.addWeighted(out, 1.0 - st.alpha, tint, st.alpha, 0.0)
        cv2.copyTo(blended, mask, out)
    for box, score, cls in zip(result.boxes, result.scores, result.classes):
        if score < st.min_score:
            continue
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        cv2.rectangle(out, (x1, y1), (x2, y2), st.box_bgr, st.thickness)
        name = class_names[cls] if 0 <= cls < len(class_names) else str(int(cls))
        cv2.putText(
            out,
            f"{name} {score:.2f}",
            (x1, max(12, y1 - 4)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.45,
            st.box_bgr,
            1,
            cv2.LINE_AA,
        )
    note = hidden_boxes_note(result, st.min_score)
    if note:  # an overlay without boxes must not look like a broken pipeline
        cv2.putText(out, note, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 255), 1, cv2.LINE_AA)
    return out


def hidden_boxes_note(result: FrameResult, min_score: float) -> str | None:
    """'N boxes, all below the overlay threshold' when boxes exist but none is drawn."""
    scores = np.asarray(result.scores, dtype=np.float64).reshape(-1)
    if scores.size == 0 or (scores >= min_score).any():
        return None
    return (
        f"{scores.size} boxes, all below overlay threshold {min_score:.2f} "
        f"(best {scores.max():.2f})"
    )


class OverlaySink(ABC):
    def __init__(self, path: Path, fps: float) -> None:
        self.path = path
        self.fps = fps
        self.written = 0

    @abstractmethod
    def write(self, frame_id: FrameId, image: np.ndarray) -> None: ...

    def close(self) -> None:
        return None


class ImageFolderSink(OverlaySink):
    """One JPEG per frame: `000012.jpg` for numbered frames, `<file name>.jpg` for image files."""

    def __init__(self, path: Path, fps: float) -> None:
        super().__init__(path, fps)
        if path.exists() and not path.is_dir():
            raise SinkError(f"--save {path} exists and is not a folder; pick a folder or an .mp4")
        path.mkdir(parents=True, exist_ok=True)

    def write(self, frame_id: FrameId, image: np.ndarray) -> None:
        stem = (
            f"{frame_id:06d}" if isinstance(frame_id, int) else str(frame_id).replace(os.sep, "_")
        )
        ok, data = cv2.imencode(".jpg", image)
        if not ok:
            raise SinkError(f"OpenCV could not encode the overlay of frame {frame_id!r}")
        atomic_write_bytes(self.path / f"{stem}.jpg", data.tobytes())
        self.written += 1


class Mp4Sink(OverlaySink):
    """MP4 ('mp4v'), sized by the first frame; later frames of another size are resized to it.
    Written under a temporary name and renamed on close, also after Ctrl-C (a valid partial)."""

    def __init__(self, path: Path, fps: float) -> None:
        super().__init__(path, fps)
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path, ".mp4")  # left by a run that was killed (SIGKILL) mid-video
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] = (0, 0)
        self._tmp = ""

    def write(self, frame_id: FrameId, image: np.ndarray) -> None:
        if self._writer is None:
            fd, self._tmp = tempfile.mkstemp(
                prefix=f".{self.path.name}.", suffix=".mp4", dir=self.path.parent
            )
            os.close(fd)
            self._size = (image.shape[1], image.shape[0])
            fourcc = cv2.VideoWriter.fourcc(*"mp4v")
            self._writer = cv2.VideoWriter(self._tmp, fourcc, self.fps, self._size)
            if not self._writer.isOpened():
                os.unlink(self._tmp)
                raise SinkError(f"OpenCV cannot write MP4 to {self.path} (no mp4v encoder?)")
        if (image.shape[1], image.shape[0]) != self._size:
            image = cv2.resize(image, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(image)
        self.written += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
            normal_permissions(self._tmp)
            os.replace(self._tmp, self.path)
            remove_stale_temps(self.path, ".mp4")  # also those younger than this run's start


# --save suffix -> sink; a path without suffix is a folder of images.
SINKS: dict[str, type[OverlaySink]] = {"": ImageFolderSink, ".mp4": Mp4Sink}


def open_sink(path: str | os.PathLike[str], fps: float) -> OverlaySink:
    p = Path(path)
    suffix = "" if p.is_dir() else p.suffix.lower()
    if suffix not in SINKS:
        valid = "a folder (no suffix) or " + ", ".join(s for s in SINKS if s)
        raise SinkError(f"--save {p}: unknown suffix {suffix!r}; expected {valid}")
    return SINKS[suffix](p, fps)
