"""Work done ahead: the next items of a stream are read by a reader thread and worked on by
`workers` worker threads while the caller handles the current one (the watch detects frames t+1
and t+2 on both cores while it classifies frame t; ONNX Runtime and OpenCV release the GIL).
Results come in order whatever order the workers finish in."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar, cast

Item = TypeVar("Item")
Result = TypeVar("Result")
JOIN_TIMEOUT_S = 1.0  # how long a caller that stops early waits for the threads to notice
POLL_S = 0.1  # how often a blocked reader checks whether the caller has stopped


@dataclass(frozen=True)
class _Failed:
    error: BaseException


_END = object()


def ahead(
    items: Iterable[Item], work: Callable[[Item], Result], depth: int = 1, workers: int = 1
) -> Generator[tuple[Item, Result], None, None]:
    """(item, work(item)) for each item, in order. An item is read only when fewer than
    `workers + depth - 1` items are read and not yet handed to the caller, so a live source is
    not read long before its frame is used. `work` may run on `workers` threads at once. An
    error reading or working on an item is raised to the caller in its place, after the items
    before it. Close the iterator (contextlib.closing) to stop early: no item is read after,
    the items in flight are dropped, and `items` is closed if it can be."""
    slots = threading.Semaphore(workers + depth - 1)
    pending: queue.SimpleQueue[object] = queue.SimpleQueue()
    stop = threading.Event()
    pool = ThreadPoolExecutor(workers, thread_name_prefix="maskwatch ahead")

    def read() -> None:
        stream = iter(items)
        try:
            while True:
                while not slots.acquire(timeout=POLL_S):
                    if stop.is_set():
                        return
                if stop.is_set():
                    return
                item = next(stream, _END)
                if item is _END:
                    pending.put(_END)
                    return
                pending.put((item, pool.submit(work, item)))  # type: ignore[arg-type]
        except BaseException as exc:  # the caller raises it, in order
            pending.put(_Failed(exc))
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()

    reader = threading.Thread(target=read, name="maskwatch reader", daemon=True)
    reader.start()
    try:
        while True:
            entry = pending.get()
            if entry is _END:
                return
            if isinstance(entry, _Failed):
                raise entry.error
            item, future = cast(tuple[Item, "Future[Result]"], entry)
            result = future.result()
            slots.release()
            yield item, result
    finally:
        stop.set()
        _cancel_waiting(pending)
        pool.shutdown(wait=True, cancel_futures=True)  # at most the frames being detected
        reader.join(timeout=JOIN_TIMEOUT_S)
        _cancel_waiting(pending)  # what the reader queued while stopping


def _cancel_waiting(pending: queue.SimpleQueue[object]) -> None:
    while True:
        try:
            entry = pending.get_nowait()
        except queue.Empty:
            return
        if isinstance(entry, tuple) and isinstance(entry[1], Future):
            entry[1].cancel()
