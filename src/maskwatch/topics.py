"""What MQTT accepts as a topic (MQTT 3.1.1 section 4.7), checked before a client sees it: a
topic paho cannot encode raises in its network thread, and one the broker refuses ends the
connection."""

from __future__ import annotations

MAX_TOPIC_BYTES = 32768  # of a topic given; what is built from two must still fit MQTT's:
MQTT_TOPIC_BYTES = 65535


def topic_fault(topic: str, publish: bool = True) -> str | None:
    """Why `topic` cannot be published to (or, if not `publish`, subscribed to), or None."""
    try:
        size = len(topic.encode("utf-8"))
    except UnicodeEncodeError:
        return "a topic is UTF-8 text (this one has bytes that are not)"
    if "\0" in topic:
        return "a topic has no NUL character"
    if publish and topic.startswith("$"):
        return "topics starting with $ are the broker's"
    if size > MAX_TOPIC_BYTES:
        return f"a topic has at most {MAX_TOPIC_BYTES} bytes"
    return None
