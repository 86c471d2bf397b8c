"""Frames from a source, stamped with the moment they were handed over, at a bounded cost.

A file (video, images, arrays) is read on demand by whoever iterates the feed: it never drops a
frame and a slow pipeline simply reads it more slowly. A live source (camera, stream) keeps
producing whether or not the pipeline keeps up, so it is read on its own thread into a small
buffer; when the buffer is full the *oldest* frame is dropped (and counted), so what the pipeline
takes next is as fresh as possible and memory stays flat on an endless camera. A live source
that delivers nothing for `stall_timeout` seconds ends the feed with a reason saying so.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice

import numpy as np

from runtime.sources import FrameId, Source


@dataclass
class Captured:
    frame_id: FrameId
    image: np.ndarray
    t_capture: float  # time.perf_counter() when the source handed the frame over
    read_ms: float  # time the source took to hand it over (decode, or waiting for a camera)
    camera: int = 0  # index of the source it came from (several sources: runtime.cameras)


class FrameFeed:
    """Iterate once. `dropped` counts live frames dropped; `stop_reason` is set when the feed,
    not the source, ended the run (a stall)."""

    def __init__(
        self,
        source: Source,
        max_frames: int | None = None,
        live_buffer: int = 2,
        stall_timeout: float = 5.0,
        camera: int = 0,
        cond: threading.Condition | None = None,
    ) -> None:
        """`cond`: a condition shared by several feeds, so one waiter hears from all of them
        (runtime.cameras); each feed's own by default."""
        if live_buffer < 1:
            raise ValueError(f"live_buffer must be >= 1, got {live_buffer}")
        self.source = source
        self.max_frames = max_frames
        self.live_buffer = live_buffer
        self.stall_timeout = stall_timeout
        self.dropped = 0
        self.delivered = 0
        self.stop_reason: str | None = None
        self._buf: deque[Captured] = deque()
        self.camera = camera
        self._cond = cond or threading.Condition()
        self._ended = False
        self._error: BaseException | None = None
        self._closing = False
        self._thread: threading.Thread | None = None

    def __iter__(self) -> Iterator[Captured]:
        frames = self._live() if self.source.live else self._stamped()
        return islice(frames, self.max_frames)

    def _stamped(self) -> Iterator[Captured]:
        it = iter(self.source)
        while True:
            t0 = time.perf_counter()
            try:
                frame_id, img = next(it)
            except StopIteration:
                return
            t1 = time.perf_counter()
            self.delivered += 1
            yield Captured(frame_id, img, t1, (t1 - t0) * 1e3, self.camera)

    # -- live sources ----------------------------------------------------------------------------
    def start(self) -> None:
        """Start reading a live source on its own thread (done by iterating, or by a MultiFeed)."""
        if self._thread is None:
            name = f"mtc-capture-{self.camera}"
            self._thread = threading.Thread(target=self._capture, name=name, daemon=True)
            self._thread.start()

    # Read by runtime.cameras with the condition held: the frames waiting, and whether the
    # capture thread has finished (its error, if it failed).
    @property
    def buffer(self) -> deque[Captured]:
        return self._buf

    @property
    def capture_ended(self) -> bool:
        return self._ended

    @property
    def capture_error(self) -> BaseException | None:
        return self._error

    def _live(self) -> Iterator[Captured]:
        self.start()
        while True:
            with self._cond:
                got = self._cond.wait_for(lambda: self._buf or self._ended, self.stall_timeout)
                if not got:
                    self.stop_reason = (
                        f"{self.source.kind} {self.source.spec} delivered no frame for "
                        f"{self.stall_timeout:g} s (stalled); stopped"
                    )
                    return
                if not self._buf:  # ended and drained
                    if self._error is not None:
                        raise self._error
                    return
                item = self._buf.popleft()
            self.delivered += 1
            yield item

    def _capture(self) -> None:
        try:
            for item in self._stamped_live():
                with self._cond:
                    if self._closing:
                        return
                    if len(self._buf) >= self.live_buffer:
                        self._buf.popleft()
                        self.dropped += 1
                    self._buf.append(item)
                    self._cond.notify_all()
        except BaseException as e:  # handed to the consumer, raised there
            self._error = e
        finally:
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def _stamped_live(self) -> Iterator[Captured]:
        it = iter(self.source)
        while not self._closing:
            t0 = time.perf_counter()
            try:
                frame_id, img = next(it)
            except StopIteration:
                return
            t1 = time.perf_counter()
            yield Captured(frame_id, img, t1, (t1 - t0) * 1e3, self.camera)

    def close(self, join_timeout: float = 1.0) -> None:
        """Stop the capture thread. One stuck in a stalled read cannot be stopped: the source is
        told not to release the device under it (the process exit does)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(join_timeout)
            if self._thread.is_alive():
                self.source.release_deferred = True  # type: ignore[attr-defined]
