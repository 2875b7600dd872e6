"""Events from other machines (`serve --mqtt`), checked before they reach the board or the log.

Anyone who can publish to the broker can send anything, so an event is kept only when every
field is of the right type and within bounds: a time between 2000-01-01 and a day from now, a
known kind and label, short strings, finite numbers."""

from __future__ import annotations

import math
from typing import Any

from maskwatch.events import Event, plausible_time
from maskwatch.labels import CANONICAL, UNCERTAIN

MAX_TEXT = 200  # characters of a camera or source name
MAX_COORDINATE = 1e6
LABELS = (*CANONICAL, UNCERTAIN)


def _text(value: object, what: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_TEXT:
        raise ValueError(f"{what} must be a string of 1 to {MAX_TEXT} characters")
    return value


def remote_event(topic: str, payload: dict[str, Any]) -> tuple[str, Event]:
    """The camera name and the event in an MQTT message; ValueError saying what is wrong."""
    camera = _text(payload.get("camera", topic), "camera")
    try:
        event = Event.from_dict(payload)
    except KeyError as exc:
        raise ValueError(f"missing field {exc}") from None
    except (TypeError, ValueError, IndexError, OverflowError) as exc:
        raise ValueError(f"malformed field ({exc})") from None
    _text(event.source, "source")
    if not plausible_time(event.time):
        raise ValueError(f"time {event.time!r} is not between 2000 and a day from now")
    for name, label in (("label", event.label), ("previous", event.previous)):
        if label is not None and label not in LABELS:
            raise ValueError(f"unknown {name} {str(label)[:MAX_TEXT]!r}")
    if not (0 <= event.track < 2**53 and 0 <= event.frame < 2**53):
        raise ValueError("track and frame must be whole numbers from 0 to 2**53")
    if not 0.0 <= event.confidence <= 1.0:
        raise ValueError(f"confidence {event.confidence!r} is not from 0 to 1")
    if not all(math.isfinite(v) and abs(v) <= MAX_COORDINATE for v in event.box):
        raise ValueError("box coordinates must be finite numbers")
    return camera, event
