"""Three stages on three threads with bounded queues between them.

    producer thread:  next(items)        (read + decode + preprocess of batch N+1)
    calling thread:   middle(item)       (inference of batch N; the backend stays on the thread
                                          that opened it, which CUDA contexts want)
    consumer thread:  last(item)         (postprocess + draw + encode of batch N-1)

Each queue holds at most `depth` items, so memory is bounded whatever the source's length; a
stage that falls behind makes the one before it wait (a live source's own buffer then drops its
oldest frames, see runtime.feed). The work that matters releases the GIL (ONNX Runtime and
TensorRT calls, OpenCV decode/resize/encode, large numpy ops), so the threads do run at once.

An exception in `middle` or `last` stops the others at once and is raised on the calling thread;
so is Ctrl-C (which Python delivers to the calling thread). An exception from `items` (the
source) first lets the items already read finish, then is raised.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
_END = object()
_POLL_S = 0.05  # how often a blocked stage looks at the stop flag


class _Stop(Exception):
    """Internal: another stage failed or the run was interrupted."""


def _put(q: queue.Queue[Any], item: Any, stop: threading.Event) -> None:
    while True:
        if stop.is_set():
            raise _Stop
        try:
            q.put(item, timeout=_POLL_S)
            return
        except queue.Full:
            continue


def _get(q: queue.Queue[Any], stop: threading.Event) -> Any:
    while True:
        if stop.is_set():
            raise _Stop
        try:
            return q.get(timeout=_POLL_S)
        except queue.Empty:
            continue


def run_overlapped(
    items: Iterator[T],
    middle: Callable[[T], None],
    last: Callable[[T], None],
    depth: int = 2,
) -> None:
    """Drive every item through middle then last, the three stages overlapping."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    q_in: queue.Queue[Any] = queue.Queue(maxsize=depth)
    q_out: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()
    errors: list[BaseException] = []

    def guarded(body: Callable[[], None]) -> Callable[[], None]:
        def target() -> None:
            try:
                body()
            except _Stop:
                pass
            except BaseException as e:  # handed to the calling thread
                errors.append(e)
                stop.set()

        return target

    def produce() -> None:
        try:
            for item in items:
                _put(q_in, item, stop)
        except _Stop:
            raise
        except BaseException as e:  # the source failed: finish what was read, then raise
            errors.append(e)
        _put(q_in, _END, stop)

    def consume() -> None:
        while (item := _get(q_out, stop)) is not _END:
            last(item)

    threads = [
        threading.Thread(target=guarded(produce), name="mtc-produce", daemon=True),
        threading.Thread(target=guarded(consume), name="mtc-consume", daemon=True),
    ]
    for t in threads:
        t.start()
    try:
        while (item := _get(q_in, stop)) is not _END:
            middle(item)
            _put(q_out, item, stop)
        _put(q_out, _END, stop)
        threads[1].join()
    except _Stop:
        pass
    except BaseException:
        stop.set()
        raise
    finally:
        stop.set()  # let a stage blocked on a queue see it (a no-op once all are done)
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
