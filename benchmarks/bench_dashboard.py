"""What the dashboard's poll costs the server as its event log grows: the median time of
`GET /api/v1/stats` as the dashboard asks it (the last 60 periods) and of the whole timeline,
on an SQLite log of a month of visits (one person every `--every` seconds, 3 events each).

    python benchmarks/bench_dashboard.py
    python benchmarks/bench_dashboard.py --people 1000000 --every 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from machine import describe_machine
from maskwatch.events import Event, EventLog
from maskwatch.types import APPEAR, LEAVE, SETTLE
from maskwatch.web.board import Board

LABELS = ("mask", "no_mask", "incorrect")


def fill(path: Path, people: int, every: float) -> None:
    """A log whose visits end now, one person every `every` seconds."""
    log = EventLog(path, "door")
    start, box = time.time() - people * every, (0.0, 0.0, 9.0, 9.0)
    for first in range(0, people, 10_000):
        events = []
        for track in range(first, min(people, first + 10_000)):
            at, label = start + track * every, LABELS[track % 3]
            events += [
                Event(at, "door", track, APPEAR, track, None, 0.0, box),
                Event(at + 1, "door", track, SETTLE, track, label, 0.9, box),
                Event(at + 5, "door", track, LEAVE, track, label, 0.9, box),
            ]
        log.write(events)
    log.close()


def median_s(poll: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        poll()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=125_000)
    parser.add_argument("--every", type=float, default=20.0, help="seconds between visits")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(describe_machine())
    path = Path(tempfile.mkdtemp()) / "events.db"
    fill(path, args.people, args.every)
    board = Board(path)
    print(f"{args.people * 3:,} events over {args.people * args.every / 86400:.1f} days, "
          f"{path.stat().st_size / 2**20:.0f} MiB; median of {args.repeats} polls:")  # fmt: skip
    for by in ("minute", "hour", "day"):
        last = median_s(lambda by=by: board.history(by, periods=60), args.repeats)
        whole = median_s(lambda by=by: board.history(by), args.repeats)
        print(f"  by {by}: last 60 periods {last * 1000:.1f} ms, whole log {whole * 1000:.0f} ms")
    board.close()


if __name__ == "__main__":
    main()
