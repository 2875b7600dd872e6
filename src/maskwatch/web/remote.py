"""Events from other machines (`serve --mqtt`), checked before they reach the board or the log.

Anyone who can publish to the broker can send anything, so an event is kept only when every
field has its JSON type (pydantic in strict mode: a number is never a string or a boolean, a
whole number never has a fraction) and is within bounds: a time between 2000-01-01 and a day
from now, a known kind and label, short strings, finite numbers."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from maskwatch.events import Event, Kind, plausible_time
from maskwatch.labels import CANONICAL, UNCERTAIN

MAX_TEXT = 200  # characters of a camera or source name
MAX_COORDINATE = 1e6
LABELS = (*CANONICAL, UNCERTAIN)
MAX_WHOLE = 2**53  # frame and track numbers stay below this (exact in a JSON double)


def _plausible(when: float) -> float:
    if not plausible_time(when):
        raise ValueError("not between 2000 and a day from now")
    return when


Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]
Whole = Annotated[int, Field(ge=0, lt=MAX_WHOLE)]
Coordinate = Annotated[float, Field(allow_inf_nan=False, ge=-MAX_COORDINATE, le=MAX_COORDINATE)]
Label = Literal[LABELS] | None  # type: ignore[valid-type]


class RemoteEvent(BaseModel):
    """An event as another machine's `detect --mqtt` publishes it (Event.to_dict)."""

    model_config = ConfigDict(strict=True, extra="ignore")

    camera: Text  # the topic's name when the payload has none
    time: Annotated[float, Field(allow_inf_nan=False), AfterValidator(_plausible)]
    source: Text
    frame: Whole
    kind: Literal[tuple(str(k) for k in Kind)]  # type: ignore[valid-type]
    track: Whole
    label: Label = None
    previous: Label = None
    confidence: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
    box: Annotated[list[Coordinate], Field(min_length=4, max_length=4)]


def remote_event(topic: str, payload: dict[str, Any]) -> tuple[str, Event]:
    """The camera name (the payload's, else the topic) and the event in an MQTT message;
    ValueError saying what is wrong (its first problem, in one line)."""
    try:
        checked = RemoteEvent.model_validate({"camera": topic, **payload})
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "event"
        raise ValueError(f"{where}: {first['msg']}") from None
    fields = checked.model_dump(exclude={"camera"})
    event = Event(
        **{**fields, "kind": Kind(checked.kind), "box": tuple(checked.box)},
        camera=checked.camera if "camera" in payload else None,
    )
    return checked.camera, event
