"""Several sources, one batch: a round holds at most one frame from each camera.

Files (videos, image folders, arrays) are read on demand, one frame from each per round: they
never drop and stay in step frame by frame. Live sources (cameras, streams) are read on their own
threads (`runtime.feed`, one condition shared by all, so one wait hears from every camera). A round
waits until every live camera has a frame, or until `max_skew` after the first one came; then it
matches by capture time: the reference is the newest of the waiting frames, and a camera's
frames older than reference - max_skew are dropped (counted) in favour of a newer one. A camera
with nothing (fresh enough) this round misses its slot (counted) and the batch is smaller; a
camera that delivers nothing for `stall_timeout`, or whose source ends or fails, leaves the run
and the others go on. The run ends when every camera has left.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from runtime.errors import MtcError
from runtime.feed import Captured, FrameFeed
from runtime.sources import Source

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov")
CAMERA_FIELD = "{camera}"
_POLL_S = 0.1  # longest single wait for a live frame (the loop waits on)


class SaveTargetError(MtcError):
    """--save cannot hold the overlays of several sources (a single file for several cameras)."""


class CameraCountError(MtcError):
    """More sources than the artifact can take in one batch."""


@dataclass
class CameraState:
    """What one camera did in a run (becomes runtime.latency.CameraInfo)."""

    taken: int = 0
    dropped: int = 0  # stale frames dropped for a fresher one (skew)
    missed: int = 0  # rounds without this camera's frame while it was still running
    ended: bool = False
    stop_reason: str = "running"
    sizes: set[tuple[int, int]] = field(default_factory=set)
    last_frame_at: float = 0.0


class MultiFeed:
    """Iterate once over rounds (lists of Captured, camera order). `states[k]` says what camera k
    did; `feeds[k].dropped` counts what its live buffer dropped on its own."""

    def __init__(
        self,
        sources: Sequence[Source],
        max_frames: int | None,
        live_buffer: int,
        stall_timeout: float,
        max_skew_s: float,
    ) -> None:
        self.cond = threading.Condition()
        self.feeds = [
            FrameFeed(s, None, live_buffer, stall_timeout, camera=k, cond=self.cond)
            for k, s in enumerate(sources)
        ]
        self.max_frames = max_frames
        self.stall_timeout = stall_timeout
        self.max_skew_s = max_skew_s
        self.states = [CameraState() for _ in sources]
        self._files = {k: iter(f) for k, f in enumerate(self.feeds) if not f.source.live}

    @property
    def dropped(self) -> int:
        return sum(f.dropped + s.dropped for f, s in zip(self.feeds, self.states))

    def __iter__(self) -> Iterator[list[Captured]]:
        now = time.perf_counter()
        for k, feed in enumerate(self.feeds):
            self.states[k].last_frame_at = now
            if feed.source.live:
                feed.start()
        while not all(s.ended for s in self.states):
            got = self._read_files()
            got.update(self._take_live(bool(got)))
            for k, st in enumerate(self.states):
                if k in got:
                    st.taken += 1
                    st.sizes.add(got[k].image.shape[:2])
                    if self.max_frames is not None and st.taken >= self.max_frames:
                        self._end(k, f"reached --max-frames {self.max_frames}")
                elif not st.ended:
                    st.missed += 1
            if got:
                yield [got[k] for k in sorted(got)]

    def _end(self, k: int, reason: str) -> None:
        st = self.states[k]
        if not st.ended:
            st.ended, st.stop_reason = True, reason

    def _read_files(self) -> dict[int, Captured]:
        got = {}
        for k, it in self._files.items():
            if self.states[k].ended:
                continue
            c = next(it, None)
            if c is None:
                self._end(k, self.feeds[k].source.stop_reason)
            else:
                got[k] = c
        return got

    def _take_live(self, have_files: bool) -> dict[int, Captured]:
        live = [k for k, f in enumerate(self.feeds) if f.source.live and not self.states[k].ended]
        if not live:
            return {}
        first = time.perf_counter() if have_files else None
        with self.cond:
            while True:
                now = time.perf_counter()
                live = [k for k in live if not self._live_ended(k, now)]
                ready = [k for k in live if self.feeds[k].buffer]
                if len(ready) == len(live):
                    break
                if ready and first is None:
                    first = now
                if first is not None:
                    wait = first + self.max_skew_s - now
                else:  # nothing yet: wait for the first frame, or a stall
                    wait = min(self.states[k].last_frame_at for k in live) + self.stall_timeout
                    wait -= now
                if wait <= 0 and first is not None:
                    break
                self.cond.wait(min(max(wait, 1e-3), _POLL_S))  # Ctrl-C is heard within _POLL_S
            return self._match(ready, time.perf_counter())

    def _live_ended(self, k: int, now: float) -> bool:
        feed, st = self.feeds[k], self.states[k]
        if feed.buffer:
            return False
        if feed.capture_ended:
            err = feed.capture_error
            why = f"failed: {err}" if err is not None else feed.source.stop_reason
            self._end(k, why)
        elif now - st.last_frame_at > self.stall_timeout:
            self._end(
                k,
                f"{feed.source.kind} {feed.source.spec} delivered no frame for "
                f"{self.stall_timeout:g} s (stalled); the other sources went on",
            )
        return st.ended

    def _match(self, ready: list[int], now: float) -> dict[int, Captured]:
        """One frame per ready camera, all within max_skew of the newest head (cond held)."""
        if not ready:
            return {}
        ref = max(self.feeds[k].buffer[0].t_capture for k in ready)
        floor = ref - self.max_skew_s
        got = {}
        for k in ready:
            buf, st = self.feeds[k].buffer, self.states[k]
            while len(buf) > 1 and buf[0].t_capture < floor:
                buf.popleft()
                st.dropped += 1
            if buf[0].t_capture >= floor:
                got[k] = buf.popleft()
                st.last_frame_at = now
            else:  # its only frame is stale: a fresher one will come (or the camera stalls)
                buf.popleft()
                st.dropped += 1
        return got

    def close(self) -> None:
        for f in self.feeds:
            f.close()


def save_targets(save: str, n_sources: int) -> list[str]:
    """Where each camera's overlays go: one source keeps `save` as given; several take a pattern
    (`out/cam{camera}.mp4`, `out/{camera}/`) or a folder (one subfolder `camK` per camera)."""
    if n_sources == 1:
        return [save.replace(CAMERA_FIELD, "0")]
    if CAMERA_FIELD in save:
        return [save.replace(CAMERA_FIELD, str(k)) for k in range(n_sources)]
    if save.lower().endswith(VIDEO_SUFFIXES):
        stem = Path(save).with_suffix("")
        raise SaveTargetError(
            f"--save {save} names one file, but there are {n_sources} sources; give a folder "
            f"(one subfolder cam0..cam{n_sources - 1} of JPEGs) or a pattern with {CAMERA_FIELD}, "
            f"e.g. --save {stem}_cam{CAMERA_FIELD}{Path(save).suffix}"
        )
    return [str(Path(save) / f"cam{k}") for k in range(n_sources)]


def check_camera_count(n_sources: int, batch: int | None, top: int, artifact: str) -> int:
    """The batch a run uses: the camera count unless `batch` says otherwise, within the
    artifact's maximum (checked before any camera is opened)."""
    if batch is None and n_sources > top:
        raise CameraCountError(
            f"{n_sources} sources but {artifact} takes at most {top} frames per batch; pass "
            f"--batch {top} (each round of frames is split into batches of {top}), give at most "
            f"{top} sources, or re-export with --max-batch {n_sources}"
        )
    return n_sources if batch is None else batch


def group_rounds(
    rounds: Iterator[list[Captured]], batch: int, cameras: int
) -> Iterator[list[Captured]]:
    """Rounds -> batches. A round larger than the batch is split; with a batch larger than the
    camera count, whole rounds are joined up to the batch (a short last batch runs as is)."""
    pending: list[Captured] = []
    for rnd in rounds:
        if pending and len(pending) + len(rnd) > batch:
            yield pending
            pending = []
        while len(rnd) > batch:
            yield rnd[:batch]
            rnd = rnd[batch:]
        pending += rnd
        if len(pending) == batch or (cameras > 1 and batch <= cameras):
            yield pending
            pending = []
    if pending:
        yield pending
