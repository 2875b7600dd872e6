"""Home Assistant MQTT discovery (`--mqtt-discovery`): a camera that publishes its events over
MQTT also announces itself as a device whose sensors Home Assistant shows without
configuration: people in view (in all and by settled label), people seen, and the last event.

Following Home Assistant's discovery schema, each sensor's config is a retained JSON message on
`<prefix>/sensor/<node>/<object>/config` (prefix `homeassistant` by default); every sensor reads
one retained JSON state message on `maskwatch/<node>/state`, and the device's availability is
`online`/`offline` on `maskwatch/<node>/availability`, `offline` being the connection's last
will, so a camera host that dies is shown unavailable. The state and availability topics are
kept out of the camera's own topic so that a dashboard subscribed to `site/#` never takes them
for events. Publishing is mqtt.py's; this module builds the topics and payloads and keeps the
camera's state.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from maskwatch import __version__
from maskwatch.defaults import DISCOVERY_PREFIX
from maskwatch.errors import SettingError
from maskwatch.events import Event
from maskwatch.labels import DISPLAY, MASK, NO_MASK
from maskwatch.presence import IN_VIEW_LABELS, UNSETTLED, InView
from maskwatch.topics import MQTT_TOPIC_BYTES, topic_fault

STATE_ROOT = "maskwatch"
ONLINE, OFFLINE = "online", "offline"
_NOT_ID = re.compile(r"[^a-zA-Z0-9_-]+")

IN_VIEW_NAMES = {
    MASK: "In view with a mask",
    NO_MASK: "In view without a mask",
    UNSETTLED: "In view, label not settled yet",
}


def check_prefix(prefix: str) -> str:
    """A discovery prefix: one or more topic levels, without wildcards or empty levels."""
    if not prefix or "+" in prefix or "#" in prefix or "" in prefix.split("/"):
        raise SettingError(
            f"--mqtt-discovery {prefix!r}: the prefix is a topic such as {DISCOVERY_PREFIX}, "
            "without + or # or empty levels"
        )
    fault = topic_fault(prefix)
    if fault is not None:
        raise SettingError(f"--mqtt-discovery {prefix[:80]!r}: {fault}")
    return prefix


def node_id(camera: str) -> str:
    """The camera's topic as an id Home Assistant accepts ([a-zA-Z0-9_-]): site/door-1 ->
    maskwatch_site_door-1."""
    return "maskwatch_" + (_NOT_ID.sub("_", camera).strip("_") or "camera")


class HomeAssistant:
    """The discovery messages and the state of one camera (named by its MQTT topic)."""

    def __init__(self, camera: str, prefix: str = DISCOVERY_PREFIX) -> None:
        self.camera = camera
        self.prefix = check_prefix(prefix)
        self.node = node_id(camera)
        self.state_topic = f"{STATE_ROOT}/{self.node}/state"
        self.availability_topic = f"{STATE_ROOT}/{self.node}/availability"
        longest = max(len(self._config_topic(o).encode()) for o, _ in self._sensors())
        if longest > MQTT_TOPIC_BYTES:
            raise SettingError(
                f"--mqtt-discovery: the prefix and the camera's topic together make discovery "
                f"topics of {longest} bytes, more than MQTT's {MQTT_TOPIC_BYTES}"
            )
        self._in_view = InView()
        self._last: Event | None = None
        self._lock = threading.Lock()

    def _sensors(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(object id, the sensor's own config) for each sensor."""
        people = {"state_class": "measurement", "unit_of_measurement": "people"}
        yield "people_in_view", {"name": "People in view", **people,
                                 "value_template": "{{ value_json.in_view }}"}  # fmt: skip
        for label in IN_VIEW_LABELS:
            name = IN_VIEW_NAMES.get(label) or f"In view, {DISPLAY[label].lower()}"
            template = f"{{{{ value_json.by_label.{label} }}}}"
            yield f"in_view_{label}", {"name": name, **people, "value_template": template}
        yield (
            "people_seen",
            {
                "name": "People seen",
                "state_class": "total_increasing",
                "unit_of_measurement": "people",
                "value_template": "{{ value_json.people_seen }}",
            },
        )
        yield (
            "last_event",
            {
                "name": "Last event",
                "value_template": "{{ value_json.last_event }}",
                "json_attributes_topic": self.state_topic,
                "json_attributes_template": "{{ value_json.last_event_detail | tojson }}",
            },
        )
        yield (
            "last_event_time",
            {
                "name": "Last event time",
                "device_class": "timestamp",
                "value_template": "{{ value_json.last_event_time }}",
            },
        )

    def _config_topic(self, object_id: str) -> str:
        return f"{self.prefix}/sensor/{self.node}/{object_id}/config"

    def configs(self) -> list[tuple[str, str]]:
        """(topic, retained JSON payload) of every sensor's discovery config."""
        device = {
            "identifiers": [self.node],
            "name": f"maskwatch {self.camera}",
            "manufacturer": "maskwatch",
            "model": "face-mask detector",
            "sw_version": __version__,
        }
        out = []
        for object_id, sensor in self._sensors():
            config = {
                **sensor,
                "unique_id": f"{self.node}_{object_id}",
                "state_topic": self.state_topic,
                "availability_topic": self.availability_topic,
                "payload_available": ONLINE,
                "payload_not_available": OFFLINE,
                "icon": "mdi:face-mask",
                "device": device,
                "origin": {"name": "maskwatch", "sw_version": __version__},
            }
            out.append((self._config_topic(object_id), json.dumps(config)))
        return out

    def update(self, event: Event) -> None:
        """Take one event of the camera into its state."""
        with self._lock:
            self._in_view.update([event])
            self._last = event

    def state(self) -> str:
        """The retained JSON every sensor reads."""
        with self._lock:
            last = self._last
            state: dict[str, Any] = {
                "in_view": len(self._in_view.labels),
                "by_label": self._in_view.counts(),
                "people_seen": self._in_view.seen,
                "last_event": None,
                "last_event_time": None,
                "last_event_detail": {},
            }
        if last is not None:
            label = f" {last.label}" if last.label else ""
            state["last_event"] = f"{last.kind}{label} (person {last.track})"
            state["last_event_time"] = datetime.fromtimestamp(last.time, UTC).isoformat()
            state["last_event_detail"] = last.to_dict()
        return json.dumps(state)
