"""What an event log costs the video: the median time of one frame's `write` (3 events), and the
time `close` takes to finish, for an SQLite file in a temporary folder and for each PostgreSQL
URL given (a database that maskwatch may create its tables in). Then what `stats` costs: the
median time of `summarise` over the SQLite log with `--people` more people in it (one
appearance each), and the process's peak memory after it.

    python benchmarks/bench_event_logs.py
    python benchmarks/bench_event_logs.py postgresql://user:pass@host/db --frames 2000
    python benchmarks/bench_event_logs.py --people 3000000
"""

from __future__ import annotations

import argparse
import resource
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from machine import describe_machine
from maskwatch.events import Event, EventLog
from maskwatch.postgres import DatabaseUrl, PostgresLog, parse_database_url
from maskwatch.stats import summarise
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


def add_people(log: Path, people: int) -> None:
    """`people` more people in an SQLite log, one appearance each, over the last day."""
    with sqlite3.connect(log) as db:
        db.execute(
            "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ?) "
            "INSERT INTO events(run, time, frame, kind, track, label, confidence) "
            "SELECT 1, ? - (i % 86400), i, 'appear', i + 1000, NULL, 0.5 FROM c",
            (people, int(time.time())),
        )
    db.close()


def measure_stats(log: Path, repeats: int) -> tuple[float, int, float]:
    """Median seconds of `summarise`, the people it counted, and the peak RSS in MB so far."""
    times, counted = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        table = summarise(log, by="hour")
        times.append(time.perf_counter() - start)
        counted = sum(sum(counts.values()) for _, counts in table.rows)
    return (
        statistics.median(times),
        counted,
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("urls", nargs="*", type=parse_database_url, metavar="URL")
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--people", type=int, default=300_000, help="added for the stats timing")
    parser.add_argument("--repeats", type=int, default=3)
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

    add_people(targets[0], args.people)
    seconds, counted, peak = measure_stats(targets[0], args.repeats)
    print(f"stats of {counted} people: {seconds:.2f} s (median of {args.repeats}), "
          f"peak RSS {peak:.0f} MB")  # fmt: skip


if __name__ == "__main__":
    main()
