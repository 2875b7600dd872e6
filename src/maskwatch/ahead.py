"""Work done ahead: the next items of a stream are read and worked on by a worker thread while
the caller handles the current one (the watch detects frame t+1 while it classifies frame t;
OpenCV and ONNX Runtime release the GIL, so both cores are used)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")
JOIN_TIMEOUT_S = 1.0  # how long a caller that stops early waits for the worker to notice


@dataclass(frozen=True)
class _Failed:
    error: BaseException


_END = object()


def ahead(
    items: Iterable[Item], work: Callable[[Item], Result], depth: int = 1
) -> Generator[tuple[Item, Result], None, None]:
    """(item, work(item)) for each item, in order, with up to `depth` finished pairs waiting
    while the caller handles one. An error reading or working on an item is raised to the
    caller in its place, after the items before it. Close the iterator (contextlib.closing) to
    stop early: the worker stops after its current item, and closes `items` if it can."""
    done: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def hand_over(entry: object) -> bool:
        while not stop.is_set():
            try:
                done.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        stream = iter(items)
        try:
            for item in stream:
                if stop.is_set() or not hand_over((item, work(item))):
                    return
            hand_over(_END)
        except BaseException as exc:  # the caller raises it, in order
            hand_over(_Failed(exc))
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=run, name="maskwatch ahead", daemon=True)
    worker.start()
    try:
        while True:
            entry = done.get()
            if entry is _END:
                return
            if isinstance(entry, _Failed):
                raise entry.error
            yield entry  # type: ignore[misc]
    finally:
        stop.set()
        while not done.empty():
            done.get_nowait()
        worker.join(timeout=JOIN_TIMEOUT_S)
