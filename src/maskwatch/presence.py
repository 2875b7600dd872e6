"""Who is in view of one camera, followed from its events: each person's settled label
(`unsettled` until it settles) and how many people have been seen. Metrics and Home Assistant's
sensors read it."""

from __future__ import annotations

from collections.abc import Iterable

from maskwatch.defaults import IN_VIEW_MAX
from maskwatch.events import Event
from maskwatch.stats import STATS_COLUMNS, UNSETTLED
from maskwatch.types import APPEAR, CHANGE, LEAVE, SETTLE

IN_VIEW_LABELS = STATS_COLUMNS  # mask, no_mask, incorrect, unsettled


class InView:
    """Follows one camera's events. A settle or change of a track never seen appearing (a
    camera reporting over MQTT that started before the server) puts it in view and counts it
    seen. At most IN_VIEW_MAX people are kept in view (events from anyone, over MQTT, may
    never say they left); beyond, the one in view the longest is dropped."""

    def __init__(self) -> None:
        self.labels: dict[int, str] = {}  # track in view -> settled label or UNSETTLED
        self.seen = 0

    def update(self, events: Iterable[Event]) -> None:
        for event in events:
            if event.kind == APPEAR:
                self._meet(event.track)
                self.labels[event.track] = UNSETTLED
            elif event.kind in (SETTLE, CHANGE):
                if event.track not in self.labels:
                    self._meet(event.track)
                self.labels[event.track] = event.label or UNSETTLED
            elif event.kind == LEAVE:
                self.labels.pop(event.track, None)

    def _meet(self, track: int) -> None:
        self.seen += 1
        self.labels.pop(track, None)  # an appear again: in view from now
        while len(self.labels) >= IN_VIEW_MAX:
            del self.labels[next(iter(self.labels))]

    def clear(self) -> None:
        """Nobody is in view any more (the source ended)."""
        self.labels.clear()

    def counts(self) -> dict[str, int]:
        """People in view by label, every label of IN_VIEW_LABELS present."""
        labels = list(self.labels.values())
        return {label: labels.count(label) for label in IN_VIEW_LABELS}
