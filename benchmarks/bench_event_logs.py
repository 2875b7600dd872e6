"""What an event log costs the video: the median time of one frame's `write` (3 events), and the
time `close` takes to finish, for an SQLite file in a temporary folder and for each PostgreSQL
URL given (a database that maskwatch may create its tables in).

    python benchmarks/bench_event_logs.py
    python benchmarks/bench_event_logs.py postgresql://user:pass@host/db --frames 2000
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from machine import describe_machine
from maskwatch.events import Event, EventLog
from maskwatch.postgres import DatabaseUrl, PostgresLog, parse_database_url
from maskwatch.types import Kind


def frame_events(frame: int, now: float) -> list[Event]:
    return [
        Event(now + frame / 30, "bench", frame, Kind.SETTLE, track, "mask", 0.9, (0, 0, 9, 9))
        for track in range(3)
    ]


def measure(log: EventLog | PostgresLog, frames: int) -> tuple[float, float]:
    """Median ms per frame's write, and seconds to close."""
    now = time.time()
    times = []
    for frame in range(frames):
        events = frame_events(frame, now)
        start = time.perf_counter()
        log.write(events)
        times.append(time.perf_counter() - start)
    start = time.perf_counter()
    log.close()
    return statistics.median(times) * 1000, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("urls", nargs="*", type=parse_database_url, metavar="URL")
    parser.add_argument("--frames", type=int, default=1000)
    args = parser.parse_args()
    print(describe_machine())
    targets: list[Path | DatabaseUrl] = [Path(tempfile.mkdtemp()) / "events.db", *args.urls]
    for target in targets:
        log = (
            PostgresLog(target, "bench")
            if isinstance(target, DatabaseUrl)
            else EventLog(target, "bench")
        )
        per_frame, closing = measure(log, args.frames)
        print(f"{target}: {per_frame:.3f} ms per frame's write (median of {args.frames}), "
              f"{closing:.2f} s to close")  # fmt: skip


if __name__ == "__main__":
    main()
