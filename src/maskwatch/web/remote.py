"""Events from other machines (`serve --mqtt`), checked before they reach the board or the log.

Anyone who can publish to the broker can send anything, so an event is kept only when every
field has its JSON type (a number is never a string or a boolean, a whole number never has a
fraction) and is within bounds: a time between 2000-01-01 and a day from now, a known kind and
label, short strings, finite numbers."""

from __future__ import annotations

import math
from typing import Any

from maskwatch.events import Event, plausible_time
from maskwatch.labels import CANONICAL, UNCERTAIN

MAX_TEXT = 200  # characters of a camera or source name
MAX_COORDINATE = 1e6
LABELS = (*CANONICAL, UNCERTAIN)
NUMBER = "a number"
WHOLE = "a whole number"
TEXT = "a string"
TEXT_OR_NULL = "a string or null"
FIELD_TYPES = {
    "time": NUMBER,
    "source": TEXT,
    "frame": WHOLE,
    "kind": TEXT,
    "track": WHOLE,
    "label": TEXT_OR_NULL,
    "previous": TEXT_OR_NULL,
    "confidence": NUMBER,
}
JSON_TYPES = {
    bool: "a boolean",
    int: WHOLE,
    float: "a fraction",
    str: TEXT,
    list: "an array",
    dict: "an object",
    type(None): "null",
}


def _text(value: object, what: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_TEXT:
        raise ValueError(f"{what} must be a string of 1 to {MAX_TEXT} characters")
    return value


def _has_type(value: object, kind: str) -> bool:
    """Whether `value` (as json.loads gives it) is of the JSON type `kind`."""
    if kind == TEXT_OR_NULL:
        return value is None or isinstance(value, str)
    if kind == TEXT:
        return isinstance(value, str)
    if isinstance(value, bool):
        return False
    return isinstance(value, int) if kind == WHOLE else isinstance(value, int | float)


def _check_types(payload: dict[str, Any]) -> None:
    """ValueError naming the first field whose value is not of its JSON type."""
    for name, kind in FIELD_TYPES.items():
        if name in payload and not _has_type(payload[name], kind):
            found = type(payload[name])
            raise ValueError(f"{name} must be {kind}, not {JSON_TYPES.get(found, found.__name__)}")
    box = payload.get("box")
    if "box" in payload and not (
        isinstance(box, list) and len(box) == 4 and all(_has_type(v, NUMBER) for v in box)
    ):
        raise ValueError("box must be an array of 4 numbers")


def remote_event(topic: str, payload: dict[str, Any]) -> tuple[str, Event]:
    """The camera name and the event in an MQTT message; ValueError saying what is wrong."""
    camera = _text(payload.get("camera", topic), "camera")
    _check_types(payload)
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
