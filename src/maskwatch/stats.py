"""`maskwatch stats`: people seen per minute, hour or day, by label, from an event log.

A person is one track of one run. They count once, in the period they appeared, under the label
their track held longest while settled (`unsettled` if it never settled).
"""

from __future__ import annotations

import io
import logging
import sqlite3
import time
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from maskwatch.defaults import STATS_PERIODS, STATS_PLOT_BARS
from maskwatch.errors import MaskwatchError, MissingExtraError
from maskwatch.events import EARLIEST_TIME, open_log, plausible_time
from maskwatch.labels import CANONICAL, DISPLAY, MASK
from maskwatch.postgres import DatabaseUrl, EventTarget, read_rows
from maskwatch.redact import redact
from maskwatch.types import CHANGE, LEAVE, SETTLE

PERIOD_FORMATS = dict(
    zip(STATS_PERIODS, ("%Y-%m-%d %H:%M", "%Y-%m-%d %H:00", "%Y-%m-%d"), strict=True)
)
UNSETTLED = "unsettled"
STATS_COLUMNS = (*CANONICAL, UNSETTLED)
COLUMN_NAMES = {**DISPLAY, UNSETTLED: "Not yet settled"}  # as charts and the dashboard say them

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger("maskwatch")


@dataclass
class Person:
    appeared: float
    source: str
    spans: dict[str, float] = field(default_factory=dict)  # seconds held per settled label
    label: str | None = None
    since: float = 0.0
    last: float = 0.0

    def hold(self, until: float) -> None:
        if self.label is not None:
            self.spans[self.label] = self.spans.get(self.label, 0.0) + max(0.0, until - self.since)
        self.since = until

    def main_label(self) -> str:
        if not self.spans:
            return self.label or UNSETTLED
        return max(self.spans, key=lambda label: (self.spans[label], label))


class Row(NamedTuple):
    """One event as the statistics read it. `run` tells runs apart (a log's run id, or the
    board's camera and session), so that track 1 of two runs are two people."""

    run: Hashable
    track: int
    time: float
    kind: str
    label: str | None
    source: str


# Events of the people first seen from a time on; when the log starts after that time (a window
# of 60 days over a month's log), every event, without looking for an earlier one of each.
# Only times a calendar can show count as earlier (as `plausible_rows` keeps them).
FIRST_SEEN_SINCE = (
    f"WHERE e.time >= ? AND (? <= (SELECT MIN(time) FROM events WHERE time >= {EARLIEST_TIME}) "
    "OR NOT EXISTS (SELECT 1 FROM events p WHERE p.run = e.run AND p.track = e.track "
    f"AND p.time < ? AND p.time >= {EARLIEST_TIME})) "
)


def iter_log_rows(
    log_path: EventTarget, since: float | None = None, appeared_since: float | None = None
) -> Iterator[Row]:
    """Every event of an event log (an SQLite file or a PostgreSQL database) as a Row, in
    order of run, track and time (each person's events together), read as they are used; only
    those from `since` when given; with `appeared_since`, only the events of the people first
    seen at or after it (a person who appeared before is left out whole, rather than counted
    from the middle of their visit), so that a window of time reads that window."""
    where: str
    args: tuple[float, ...]
    if appeared_since is not None:
        where, args = FIRST_SEEN_SINCE, (appeared_since,) * 3
    elif since is not None:
        where, args = "WHERE e.time >= ? ", (since,)
    else:
        where, args = "", ()
    # `+e.run`: a window is found by the time index and sorted, not the whole log walked in order
    first = "e.run" if not args else "+e.run"
    query = (
        "SELECT e.run, e.track, e.time, e.kind, e.label, r.source FROM events e "
        f"JOIN runs r ON r.id = e.run {where}ORDER BY {first}, e.track, e.time, e.id"
    )
    if isinstance(log_path, DatabaseUrl):
        yield from (Row(*row) for row in read_rows(log_path, query, args))
        return
    db = open_log(log_path)
    try:
        for row in db.execute(query, args):
            yield Row(*row)
    except sqlite3.Error as exc:  # tables or columns missing: damaged by hand or by a tool
        raise MaskwatchError(f"{log_path}: not a usable maskwatch event log ({exc})") from exc
    finally:
        db.close()


def log_rows(
    log_path: EventTarget, since: float | None = None, appeared_since: float | None = None
) -> list[Row]:
    """`iter_log_rows` as a list."""
    return list(iter_log_rows(log_path, since, appeared_since))


def _unusable(row: Row, now: float) -> str | None:
    """Why no count can use `row` (written by an older version or by hand), or None: a time no
    calendar shows (not a number, infinite, before 2000, far in the future), or a settled label
    that is none of ours."""
    if not plausible_time(row.time, now):
        return "time"
    if row.kind in (SETTLE, CHANGE) and row.label not in CANONICAL:
        return "label"
    return None


def plausible_rows(rows: Iterable[Row]) -> list[Row]:
    """`rows` without those no count can use (`_unusable`)."""
    now = time.time()
    return [row for row in rows if _unusable(row, now) is None]


def _people(rows: Iterable[Row], source: str | None, grouped: bool) -> Iterator[Person]:
    """Every person (one track of one run) in `rows`, optionally of one source only. With
    `grouped` (rows in a log's order: each person's events together), each person is given as
    soon as their events end, so that only one is held at a time."""
    found: dict[tuple[Hashable, int], Person] = {}
    for row in rows:
        if source is not None and row.source != source:
            continue
        person = found.get((row.run, row.track))
        if person is None:
            if grouped:
                yield from _finished(found)
            person = Person(appeared=row.time, source=row.source, since=row.time)
            found[(row.run, row.track)] = person
        person.last = row.time
        if row.kind in (SETTLE, CHANGE):
            person.hold(row.time)
            person.label = row.label
        elif row.kind == LEAVE:
            person.hold(row.time)
    yield from _finished(found)


def _finished(found: dict[tuple[Hashable, int], Person]) -> Iterator[Person]:
    """The people of `found`, each with their last label held, leaving `found` empty."""
    for person in found.values():
        if person.label is not None and not person.spans:
            person.hold(person.last)
        yield person
    found.clear()


def people(rows: Iterable[Row], source: str | None = None) -> list[Person]:
    """Every person (one track of one run) in `rows`, optionally of one source only."""
    return list(_people(rows, source, grouped=False))


@dataclass
class StatsTable:
    by: str
    rows: list[tuple[str, Counter[str]]]

    def to_dict(self) -> dict[str, object]:
        def counts(c: Counter[str]) -> dict[str, int]:
            return {"people": sum(c.values()), **{k: c[k] for k in STATS_COLUMNS}}

        total: Counter[str] = Counter()
        for _, c in self.rows:
            total.update(c)
        return {
            "by": self.by,
            "rows": [{"period": p, **counts(c)} for p, c in self.rows],
            "total": counts(total),
        }

    def text(self) -> str:
        header = (f"{self.by:<16}", "people", *STATS_COLUMNS)
        lines = ["  ".join(f"{h:>9}" if i else h for i, h in enumerate(header))]
        total: Counter[str] = Counter()
        for period, counts in self.rows:
            total.update(counts)
            lines.append(_row(f"{period:<16}", counts))
        lines.append(_row(f"{'total':<16}", total))
        return "\n".join(lines)


def _row(first: str, counts: Counter[str]) -> str:
    values = [sum(counts.values()), *(counts[c] for c in STATS_COLUMNS)]
    return "  ".join([first, *(f"{v:>9}" for v in values)])


class _Checked:
    """Rows passed on as they are read, less those no count can use (a time no calendar
    shows; a settled label that is none of ours), counted to be told once at the end; and the
    sources seen, for a `--source` that matches none."""

    def __init__(self) -> None:
        self.read = 0
        self.bad_time = 0
        self.bad_label = 0
        self.sources: set[object] = set()

    def rows(self, rows: Iterable[Row]) -> Iterator[Row]:
        now = time.time()
        for row in rows:
            self.read += 1
            why = _unusable(row, now)
            if why == "time":
                self.bad_time += 1
            elif why == "label":
                self.bad_label += 1
            else:
                self.sources.add(row.source)
                yield row

    def warn(self, log_path: EventTarget) -> None:
        for count, why in (
            (self.bad_time, "whose time is not a date between 2000 and tomorrow"),
            (self.bad_label, f"whose label is not {', '.join(CANONICAL)}"),
        ):
            if count:
                log.warning("%s: skipped %d of %d events %s", log_path, count, self.read, why)


def summarise(log_path: EventTarget, by: str = "hour", source: str | None = None) -> StatsTable:
    """People per period by label from an event log, read row by row (memory grows with the
    periods, not the log); events with impossible times or labels are left out, with one
    warning. A camera URL's `source` is looked up as the log names it, without its password."""
    if source is not None:
        source = redact(source)
    checked = _Checked()
    table = _table(_people(checked.rows(iter_log_rows(log_path)), source, grouped=True), by)
    checked.warn(log_path)
    if source is not None and source not in checked.sources:
        log.warning(
            "%s: no events of the camera %r; its cameras: %s",
            log_path,
            source,
            ", ".join(sorted(repr(name) for name in checked.sources)) or "none",
        )
    return table


def _check_period(by: str) -> None:
    if by not in PERIOD_FORMATS:
        raise MaskwatchError(f"unknown period {by!r}; choose from {', '.join(STATS_PERIODS)}")


def _table(persons: Iterable[Person], by: str, since: float | None = None) -> StatsTable:
    _check_period(by)
    periods: dict[str, Counter[str]] = defaultdict(Counter)
    for person in persons:
        if since is not None and person.appeared < since:
            continue
        period = time.strftime(PERIOD_FORMATS[by], time.localtime(person.appeared))
        periods[period][person.main_label()] += 1
    return StatsTable(by, sorted(periods.items()))


def summarise_rows(
    rows: Iterable[Row], by: str = "hour", source: str | None = None, since: float | None = None
) -> StatsTable:
    """People per period of `by`, by label; only those who appeared at or after `since`."""
    return _table(_people(rows, source, grouped=False), by, since)


def period_start(moment: float, by: str, back: int = 0) -> float:
    """When the period of `by` (local time) holding `moment` began, moved `back` periods
    earlier: where a timeline of the last `back + 1` periods starts."""
    _check_period(by)
    t = time.localtime(moment)
    day, hour, minute = t.tm_mday, t.tm_hour, t.tm_min
    if by == "minute":
        minute -= back
    elif by == "hour":
        hour, minute = hour - back, 0
    else:
        day, hour, minute = day - back, 0, 0
    return time.mktime((t.tm_year, t.tm_mon, day, hour, minute, 0, 0, 0, -1))


@dataclass
class Compliance:
    """Per period of `step` seconds from `start`: how many people settled (counted under their
    main settled label, in the period they were first seen) and how many of them wore a mask."""

    start: float
    step: float
    settled: list[int]
    mask: list[int]

    def to_dict(self) -> dict[str, object]:
        return {
            "start": round(self.start, 3),
            "step_s": self.step,
            "settled": self.settled,
            "mask": self.mask,
            "share": [
                round(m / s, 4) if s else None for m, s in zip(self.mask, self.settled, strict=True)
            ],
        }


def compliance(
    rows: Iterable[Row], start: float, step: float, periods: int
) -> dict[str, Compliance]:
    """Mask compliance per source, in `periods` periods of `step` seconds from `start`: the
    share of settled people with a mask. Someone never settled does not count."""
    found: dict[str, Compliance] = {}
    for person in people(rows):
        label = person.main_label()
        period = int((person.appeared - start) // step)
        if label == UNSETTLED or not 0 <= period < periods:
            continue
        counts = found.get(person.source)
        if counts is None:
            counts = found[person.source] = Compliance(start, step, [0] * periods, [0] * periods)
        counts.settled[period] += 1
        counts.mask[period] += label == MASK
    return found


def _chart_rows(table: StatsTable) -> list[tuple[str, Counter[str]]]:
    """The periods a chart shows: the most recent STATS_PLOT_BARS, with a warning when that
    is not all of them (a bar per minute over weeks would draw an image of gigabytes)."""
    if len(table.rows) <= STATS_PLOT_BARS:
        return table.rows
    coarser = STATS_PERIODS[STATS_PERIODS.index(table.by) + 1 :]
    hint = f"; use --by {' or '.join(coarser)} to see them all" if coarser else ""
    log.warning(
        "the chart shows the last %d of %d %ss%s",
        STATS_PLOT_BARS,
        len(table.rows),
        table.by,
        hint,
    )
    return table.rows[-STATS_PLOT_BARS:]


def chart(table: StatsTable) -> Figure:
    """A stacked bar chart of people per period by label, its legend in a row above the bars
    (never over them)."""
    try:
        from matplotlib.figure import Figure  # drawn without pyplot: no global state
        from matplotlib.ticker import MaxNLocator
    except ImportError as exc:
        raise MissingExtraError("--plot", "plot") from exc
    from maskwatch.labels import COLOURS

    rows = _chart_rows(table)
    names = [period for period, _ in rows]
    fig = Figure(figsize=(max(6.0, 0.5 * len(names) + 2), 4), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    bottom = [0] * len(names)
    for column in STATS_COLUMNS:
        values = [counts[column] for _, counts in rows]
        b, g, r = COLOURS.get(column, (160, 160, 160))
        ax.bar(
            range(len(names)),
            values,
            bottom=bottom,
            color=(r / 255, g / 255, b / 255),
            label=COLUMN_NAMES[column],
        )
        bottom = [x + v for x, v in zip(bottom, values, strict=True)]
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("people")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # people are counted whole
    ax.set_title(f"People seen per {table.by}")
    fig.legend(loc="outside upper center", ncols=len(STATS_COLUMNS), fontsize=8, frameon=False)
    return fig


def plot(table: StatsTable, dest: Path) -> None:
    """The chart written as PNG (drawn in memory first, so a device or pipe gets it as a file
    would)."""
    from maskwatch.atomic import write_bytes

    png = io.BytesIO()
    chart(table).savefig(png, format="png")
    write_bytes(dest, png.getvalue())
