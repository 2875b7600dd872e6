"""Events over MQTT, for sites with many cameras: `detect --mqtt` publishes, `serve --mqtt`
subscribes. Needs the `mqtt` extra (paho-mqtt).

A camera publishes each event as JSON (QoS 1) to its topic, e.g. `site/door-1`; the dashboard
subscribes to a pattern such as `site/#` and shows every camera of the site. While the broker is
unreachable a camera keeps working and keeps the newest `queue_size` events, sent when the
broker is back. With Home Assistant discovery (hass.py) a camera also announces its sensors and
keeps their state up to date, each time it connects and at each event.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from maskwatch.errors import MaskwatchError, MissingExtraError, OutputError
from maskwatch.events import Event
from maskwatch.hass import OFFLINE, ONLINE, HomeAssistant
from maskwatch.jsontext import parse_json
from maskwatch.outbox import Outbox, ThrottledWarning
from maskwatch.redact import URL_HINT, redact
from maskwatch.topics import topic_fault

if TYPE_CHECKING:
    from maskwatch.postgres import DatabaseUrl

log = logging.getLogger("maskwatch")

MQTT_QUEUE = 1000
MQTT_QOS = 1


@dataclass(frozen=True)
class MqttTarget:
    host: str
    port: int
    topic: str
    username: str | None = None
    password: str | None = None


def parse_mqtt_url(url: str, pattern: bool = False) -> MqttTarget:
    """mqtt://[user:pass@]host[:port]/topic; `pattern` allows + and # in the topic."""
    shown = redact(url)[:200]
    try:  # ValueError's text may quote a piece of the password: not shown
        parts = urlsplit(url)
        port = parts.port or 1883
    except ValueError:
        raise MaskwatchError(f"--mqtt {shown!r}: {URL_HINT}") from None
    # '#' is MQTT's multi-level wildcard, which a URL parser takes for a fragment.
    topic = unquote(parts.path.lstrip("/")) + ("#" + parts.fragment if "#" in url else "")
    if parts.scheme != "mqtt" or not parts.hostname or not topic:
        raise MaskwatchError(f"--mqtt {shown!r}: expected mqtt://host[:port]/topic")
    if not pattern and ("+" in topic or "#" in topic):
        raise MaskwatchError(f"--mqtt {shown!r}: a camera publishes to one topic, without + or #")
    fault = topic_fault(topic, publish=not pattern)
    if fault is not None:
        raise MaskwatchError(f"--mqtt {shown!r}: {fault}")
    return MqttTarget(parts.hostname, port, topic, parts.username, parts.password)


def _client(
    target: MqttTarget, prefix: str, will: tuple[str, str] | None = None, **callbacks: Any
) -> Any:
    """A paho client with `callbacks` (on_connect=...) and a retained last `will` (topic,
    payload) if given, reconnecting with 1-30 s backoff once `_start`ed. Keep it before starting
    it: its callbacks may run at once."""
    try:
        import paho.mqtt.client as mqtt
    except ImportError as exc:
        raise MissingExtraError("MQTT", "mqtt") from exc
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=f"{prefix}-{uuid.uuid4().hex[:8]}"
    )
    if target.username:
        client.username_pw_set(target.username, target.password)
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    if will is not None:
        client.will_set(*will, qos=MQTT_QOS, retain=True)
    for name, callback in callbacks.items():
        setattr(client, name, callback)
    return client


def _start(client: Any, target: MqttTarget) -> None:
    """Connect in the client's own thread."""
    client.connect_async(target.host, target.port, keepalive=30)
    client.loop_start()


class MqttPublisher:
    """Publishes events to one topic; never blocks the video, never fails it. With `discovery`
    (a Home Assistant discovery prefix) it also announces the camera's sensors and publishes
    their state (hass.py)."""

    def __init__(
        self, url: str, queue_size: int = MQTT_QUEUE, discovery: str | None = None
    ) -> None:
        self.target = parse_mqtt_url(url)
        self.hass = HomeAssistant(self.target.topic, discovery) if discovery else None
        self._state_lock = threading.Lock()
        self.sent = 0
        where = f"the MQTT broker {self.target.host}:{self.target.port}"
        self._pending: Outbox[str] = Outbox(queue_size, where)
        self._lock = threading.Lock()
        self._connected = False
        self._ever_connected = False
        self._unacknowledged: list[Any] = []  # paho's MQTTMessageInfo of events sent, not acked
        self._client = _client(
            self.target,
            "maskwatch-camera",
            will=(self.hass.availability_topic, OFFLINE) if self.hass else None,
            on_connect=self._on_connect,
            on_disconnect=self._on_disconnect,
        )
        _start(self._client, self.target)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.warning("MQTT broker %s refused the connection: %s", self.target.host, reason)
            return
        with self._lock:
            self._connected = self._ever_connected = True
            pending = self._pending.take()
        if self.hass is not None:
            for topic, config in self.hass.configs():
                client.publish(topic, config, qos=MQTT_QOS, retain=True)
            client.publish(self.hass.availability_topic, ONLINE, qos=MQTT_QOS, retain=True)
        if pending:
            log.info("MQTT broker back; sending %d queued events", len(pending))
        for payload in pending:
            self._send(payload)
        self._publish_state()

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        with self._lock:
            was = self._connected
            self._connected = False
        if was:
            log.warning(
                "MQTT broker %s:%d lost; queueing events", self.target.host, self.target.port
            )

    def _send(self, payload: str) -> None:
        info = self._client.publish(self.target.topic, payload, qos=MQTT_QOS)
        if info.rc == 0:
            self.sent += 1
            with self._lock:
                self._unacknowledged = [i for i in self._unacknowledged if not i.is_published()]
                self._unacknowledged.append(info)
        else:
            self._pending.put(payload)

    @property
    def dropped(self) -> int:
        return self._pending.dropped

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def queued(self) -> int:
        return len(self._pending)

    @property
    def unacknowledged(self) -> int:
        """Events handed to the connection that the broker has not acknowledged yet."""
        with self._lock:
            return sum(not info.is_published() for info in self._unacknowledged)

    @property
    def unsent(self) -> int:
        """Events that never reached the broker: still queued, pushed out of the queue, or
        sent without the broker's acknowledgement (by the time of asking)."""
        return self.queued + self.dropped + self.unacknowledged

    def unsent_message(self) -> str:
        """One line for a person: how many events were not delivered, and why."""
        where = f"{self.target.host}:{self.target.port}"
        why = "it was lost" if self._ever_connected else "it never answered"
        return f"{self.unsent} events were not sent to the MQTT broker {where} ({why})"

    def publish(self, event: Event) -> None:
        """Send `event` (queued while the broker is away). On the broker a camera is its topic,
        so that is the event's camera there."""
        payload = json.dumps(replace(event, camera=self.target.topic).to_dict())
        with self._lock:
            connected = self._connected
        if connected:
            self._send(payload)
        else:
            self._pending.put(payload)
        if self.hass is not None:
            self.hass.update(event)
            self._publish_state()

    def _publish_state(self) -> None:
        """The sensors' state, retained, when connected (it is sent again on connecting)."""
        if self.hass is None:
            return
        with self._state_lock:  # made and sent in one step: a stale state never comes last
            if self._connected:
                state = self.hass.state()
                self._client.publish(self.hass.state_topic, state, qos=MQTT_QOS, retain=True)

    def close(self, wait: float = 2.0) -> None:
        """Give in-flight messages up to `wait` seconds, then disconnect; `unsent` tells
        what never reached the broker."""
        if self._connected:
            if self.hass is not None:  # a clean disconnect sends no last will
                self._client.publish(
                    self.hass.availability_topic, OFFLINE, qos=MQTT_QOS, retain=True
                )
            deadline = time.monotonic() + wait  # until the broker has acknowledged every event
            while (self.unacknowledged or self._client.want_write()) and (
                time.monotonic() < deadline
            ):
                time.sleep(0.05)
        with self._lock:  # leaving is not losing the broker: no warning from _on_disconnect
            self._connected = False
        self._client.disconnect()
        self._client.loop_stop()


class MqttOutput:
    """A publisher as a watch's event output. Closing it is an error when events never reached
    the broker: a run must not end as if they had (they are still in `kept_in`, the event
    log, when there is one)."""

    def __init__(self, publisher: MqttPublisher, kept_in: Path | DatabaseUrl | None = None) -> None:
        self.publisher = publisher
        self.kept_in = kept_in

    def write(self, events: Sequence[Event], image: object = None) -> None:
        for event in events:
            self.publisher.publish(event)

    def close(self) -> None:
        self.publisher.close()
        if self.publisher.unsent:
            where = f"; they are in {self.kept_in}" if self.kept_in else ""
            raise OutputError(self.publisher.unsent_message() + where)


MQTT_MAX_PAYLOAD = 4096  # bytes of one event; larger messages are dropped unparsed


class MqttSubscriber:
    """Calls `on_message(topic, payload)` for each event published under a topic pattern.

    A message larger than MQTT_MAX_PAYLOAD, not a JSON object, or refused by `on_message` with
    ValueError is dropped with a warning (at most one per DROP_WARNING_INTERVAL, counting the
    drops), so a hostile publisher can neither flood the log nor stop the subscriber."""

    def __init__(self, url: str, on_message: Callable[[str, dict[str, Any]], None]) -> None:
        self.target = parse_mqtt_url(url, pattern=True)
        self.dropped = 0
        self._warning = ThrottledWarning()
        self._on_message = on_message
        self._client = _client(
            self.target,
            "maskwatch-dashboard",
            on_connect=self._on_connect,
            on_message=self._message,
        )
        _start(self._client, self.target)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if not reason.is_failure:
            client.subscribe(self.target.topic, qos=MQTT_QOS)

    def _message(self, client: Any, userdata: Any, message: Any) -> None:
        try:
            if len(message.payload) > MQTT_MAX_PAYLOAD:
                raise ValueError(f"{len(message.payload)} bytes, more than {MQTT_MAX_PAYLOAD}")
            payload = parse_json(message.payload)
            if not isinstance(payload, dict):
                raise ValueError("not a JSON object")
            self._on_message(message.topic, payload)
        except ValueError as exc:  # UnicodeDecodeError is one too
            self._drop(message.topic, str(exc) or type(exc).__name__)
        except Exception:  # the network thread must outlive any one message
            log.exception("an MQTT message on %s could not be handled", message.topic)

    def _drop(self, topic: str, reason: str) -> None:
        self.dropped += 1
        self._warning.warn(
            "ignoring an invalid event on %s: %s (%d dropped so far)",
            topic,
            reason[:200],
            self.dropped,
        )

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
