"""Frame sources: video files, cameras, network streams, image folders/globs, numpy iterables.

Every source yields `(frame_id, frame)` with frame a BGR uint8 HxWx3 array, and records why it
stopped (`stop_reason`), because "processed 212 frames" means little without "camera disconnected".
Kinds are registered classes that each claim the specs they understand; the claims are disjoint.
"""

from __future__ import annotations

import glob
import os
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar, TypeVar, Union

import cv2
import numpy as np

from runtime.errors import MtcError
from runtime.image_read import ImageDecodeError, read_image
from runtime.registry import Registry

FrameId = int | str
Frame = tuple[FrameId, np.ndarray]
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
URL_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
SourceSpec = Union[str, os.PathLike, int, Iterable[Any], "Source"]
MAX_BAD_FRAMES = 25  # undecodable video frames in a row before the video counts as ended


class SourceError(MtcError):
    """A source cannot be opened or delivers frames the runtime cannot use."""


class FrameFormatWarning(UserWarning):
    """Frames were converted (grayscale / 4-channel -> BGR); warned once per source and kind."""


class Source(ABC):
    kind: ClassVar[str] = ""
    # A live source (camera, stream) keeps producing whether or not we keep up: the pipeline reads
    # it on its own thread and drops its oldest frames when behind. A file waits for us.
    live: ClassVar[bool] = False

    def __init__(self, spec: Any) -> None:
        self.spec = spec
        self.frames_read = 0
        self.frames_skipped = 0
        self.stop_reason = "not started"
        self._warned: set[str] = set()

    @classmethod
    @abstractmethod
    def claims(cls, spec: Any) -> bool:
        """True if this kind understands `spec`."""

    def open(self) -> Source:
        return self

    def close(self) -> None:
        return None

    @property
    def length(self) -> int | None:
        """Frames expected, when knowable up front (for progress bars)."""
        return None

    @property
    def fps(self) -> float | None:
        return None

    @abstractmethod
    def _frames(self) -> Iterator[Frame]: ...

    def __iter__(self) -> Iterator[Frame]:
        self.stop_reason = "running"
        for frame_id, img in self._frames():
            self.frames_read += 1
            yield frame_id, self.to_bgr(img, frame_id)

    def __enter__(self) -> Source:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def to_bgr(self, img: Any, frame_id: FrameId) -> np.ndarray:
        img = np.asarray(img)
        if img.dtype != np.uint8:
            raise SourceError(
                f"frame {frame_id!r} has dtype {img.dtype}; expected uint8 BGR (0..255): convert "
                "with np.clip(x * 255, 0, 255).astype(np.uint8) or similar"
            )
        channels = 1 if img.ndim == 2 else (img.shape[2] if img.ndim == 3 else -1)
        if channels not in _TO_BGR:
            raise SourceError(
                f"frame {frame_id!r} has shape {list(img.shape)}; expected HxW, HxWx1, HxWx3 (BGR) "
                "or HxWx4 (BGRA)"
            )
        label, code = _TO_BGR[channels]
        if code is None:
            return img
        if label not in self._warned:
            self._warned.add(label)
            warnings.warn(
                f"{self.kind} source {self.spec!r}: {label} frames are converted to BGR "
                "(warned once)",
                FrameFormatWarning,
                stacklevel=3,
            )
        return cv2.cvtColor(img, code)


# channels -> (description, OpenCV conversion or None for BGR already)
_TO_BGR: dict[int, tuple[str, int | None]] = {
    1: ("grayscale", cv2.COLOR_GRAY2BGR),
    3: ("BGR", None),
    4: ("4-channel (BGRA)", cv2.COLOR_BGRA2BGR),
}

_S = TypeVar("_S", bound=Source)
# Registration order is the order `open_source` asks the kinds to claim a spec in.
SOURCES: Registry[type[Source]] = Registry("source kind", SourceError)


def register_source(kind: str) -> Callable[[type[_S]], type[_S]]:
    def deco(cls: type[_S]) -> type[_S]:
        SOURCES.register(kind, cls)
        cls.kind = kind
        return cls

    return deco


def list_sources() -> list[str]:
    return list(SOURCES)


def open_source(spec: SourceSpec) -> Source:
    """Pick the kind that claims `spec` and open it (errors surface here, not mid-run)."""
    if isinstance(spec, Source):
        return spec.open()
    for cls in SOURCES.values():
        if cls.claims(spec):
            return cls(spec).open()
    raise SourceError(
        f"source {spec!r} is not a camera index, a stream URL ({', '.join(URL_SCHEMES[:3])}...), "
        "an existing video or image file, a folder of images, or a glob; check the path"
    )


def _is_pathlike(spec: Any) -> bool:
    return isinstance(spec, (str, os.PathLike))


class _CaptureSource(Source):
    """OpenCV VideoCapture behind a file, a camera or a stream."""

    what = "video"

    def _target(self) -> Any:
        return str(self.spec)

    def open(self) -> Source:
        self._cap = cv2.VideoCapture(self._target())
        first = self._cap.read() if self._cap.isOpened() else (False, None)
        if not first[0]:
            self._cap.release()
            raise SourceError(self._open_error())
        self._first = first[1]
        return self

    def _open_error(self) -> str:
        return (
            f"cannot read {self.what} {self.spec}: OpenCV could not open or decode it (not a video, "
            "corrupt, or a codec this OpenCV build lacks); convert it, e.g. ffmpeg -i IN out.mp4, "
            "or pass a folder of images"
        )

    def close(self) -> None:
        # A reader thread stuck in a stalled read() still uses the capture: releasing it under
        # that thread can crash OpenCV, so it is left to the process exit (runtime.feed says so).
        if getattr(self, "_cap", None) is not None and not getattr(self, "release_deferred", False):
            self._cap.release()

    @property
    def length(self) -> int | None:
        n = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT)) if hasattr(self, "_cap") else 0
        return n if n > 0 else None

    @property
    def fps(self) -> float | None:
        fps = float(self._cap.get(cv2.CAP_PROP_FPS)) if hasattr(self, "_cap") else 0.0
        return fps if 0 < fps < 1000 else None

    def _frames(self) -> Iterator[Frame]:
        frame, i = self._first, 0
        self._first = None
        while frame is not None:
            yield i, frame
            i += 1
            ok, frame = self._cap.read()
            if not ok and not self.live:
                ok, frame, i = self._skip_bad_frames(i)
            if not ok:
                frame = None
        self.stop_reason = self._end_reason(i)

    def _skip_bad_frames(self, index: int) -> tuple[bool, Any, int]:
        """A file read failed at frame `index`: the end, or frames that do not decode. Read on
        (up to MAX_BAD_FRAMES); if a frame comes, the failed ones are counted and named, else it
        was the end and nothing is counted (the container's frame count is only an estimate)."""
        for bad in range(1, MAX_BAD_FRAMES + 1):
            ok, frame = self._cap.read()
            if ok:
                self.frames_skipped += bad
                names = f"frame {index}" if bad == 1 else f"frames {index}..{index + bad - 1}"
                warnings.warn(
                    f"{names} of {self.spec} could not be decoded; skipped",
                    FrameFormatWarning,
                    stacklevel=3,
                )
                return True, frame, index + bad
        return False, None, index

    def _end_reason(self, n: int) -> str:
        return "end of video"


@register_source("camera")
class CameraSource(_CaptureSource):
    what = "camera"
    live = True

    @classmethod
    def claims(cls, spec: Any) -> bool:
        return (isinstance(spec, int) and not isinstance(spec, bool)) or (
            isinstance(spec, str) and spec.isdigit()
        )

    def _target(self) -> Any:
        return int(self.spec)

    def _open_error(self) -> str:
        return f"cannot open camera {self.spec}: no such device or it is busy; list /dev/video*"

    @property
    def length(self) -> int | None:
        return None

    def _end_reason(self, n: int) -> str:
        return f"camera {self.spec} stopped delivering frames after {n} frames (disconnected?)"


@register_source("stream")
class StreamSource(_CaptureSource):
    what = "stream"
    live = True

    @classmethod
    def claims(cls, spec: Any) -> bool:
        return isinstance(spec, str) and spec.lower().startswith(URL_SCHEMES)

    def _open_error(self) -> str:
        return f"cannot open stream {self.spec}: unreachable, wrong URL, or no FFmpeg in OpenCV"

    @property
    def length(self) -> int | None:
        return None

    def _end_reason(self, n: int) -> str:
        return f"stream stopped after {n} frames (ended or disconnected)"


@register_source("images")
class ImageFilesSource(Source):
    """A folder (not recursive), a glob, or one image file; frame ids are file names."""

    @classmethod
    def claims(cls, spec: Any) -> bool:
        if not _is_pathlike(spec):
            return False
        text = os.fspath(spec)
        p = Path(text)
        return (
            p.is_dir()
            or any(c in text for c in "*?[")
            or (p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        )

    def open(self) -> Source:
        text = os.fspath(self.spec)
        if Path(text).is_dir():
            candidates = [str(p) for p in Path(text).iterdir()]
        elif any(c in text for c in "*?["):
            candidates = glob.glob(text)
        else:
            candidates = [text]
        self._paths = sorted(p for p in candidates if Path(p).suffix.lower() in IMAGE_SUFFIXES)
        if not self._paths:
            raise SourceError(
                f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) match {text}; check the path"
            )
        return self

    @property
    def length(self) -> int | None:
        return len(self._paths)

    def _frames(self) -> Iterator[Frame]:
        for path in self._paths:
            try:  # a truncated JPEG/PNG is skipped too, not run as a half-grey frame
                img = read_image(path, cv2.IMREAD_COLOR)
            except ImageDecodeError as e:
                self.frames_skipped += 1
                warnings.warn(f"skipping {e}", FrameFormatWarning, stacklevel=2)
                continue
            yield Path(path).name, img
        self.stop_reason = "end of images"


@register_source("video")
class VideoFileSource(_CaptureSource):
    @classmethod
    def claims(cls, spec: Any) -> bool:
        if not _is_pathlike(spec):
            return False
        p = Path(os.fspath(spec))
        return p.is_file() and p.suffix.lower() not in IMAGE_SUFFIXES


@register_source("arrays")
class ArraySource(Source):
    """Frames from Python: arrays, or (frame_id, array) pairs."""

    @classmethod
    def claims(cls, spec: Any) -> bool:
        return isinstance(spec, Iterable) and not isinstance(spec, (str, bytes, os.PathLike))

    def _frames(self) -> Iterator[Frame]:
        for i, item in enumerate(self.spec):
            if isinstance(item, tuple) and len(item) == 2:
                yield item[0], item[1]
            else:
                yield i, item
        self.stop_reason = "end of input"

    @property
    def length(self) -> int | None:
        return len(self.spec) if hasattr(self.spec, "__len__") else None
