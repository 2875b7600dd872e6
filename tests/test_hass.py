"""Home Assistant MQTT discovery against the real Mosquitto the `broker` fixture starts: the
retained sensor configs of Home Assistant's schema, the state those sensors read as people
come and go, and availability, with `offline` as the connection's last will."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from fastapi.testclient import TestClient

from conftest import assert_one_line_error, run_cli, wait_for
from maskwatch.mqtt import parse_mqtt_url
from maskwatch.watch import WatchSettings
from maskwatch.web.app import ServeSettings, create_app

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_soak import MjpegServer

NODE = "maskwatch_site_door-1"
STATE = f"maskwatch/{NODE}/state"
AVAILABILITY = f"maskwatch/{NODE}/availability"
STATE_HALL = "maskwatch/maskwatch_site_hall/state"
SENSORS = {
    "people_in_view", "in_view_mask", "in_view_no_mask", "in_view_incorrect",
    "in_view_unsettled", "people_seen", "last_event", "last_event_time",
}  # fmt: skip


class Listener:
    """A plain paho client subscribed to the discovery and state topics, keeping every message
    as (topic, payload text, retained)."""

    def __init__(self, url: str) -> None:
        target = parse_mqtt_url(url + "/x")
        self.messages: list[tuple[str, str, bool]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_message = self._message
        self.client.connect(target.host, target.port)
        self.client.subscribe([("homeassistant/#", 1), ("maskwatch/#", 1)])
        self.client.loop_start()
        time.sleep(0.5)

    def _message(self, client: Any, userdata: Any, message: Any) -> None:
        with self._lock:
            self.messages.append((message.topic, message.payload.decode(), bool(message.retain)))

    def on(self, topic: str) -> list[str]:
        with self._lock:
            return [payload for t, payload, _ in self.messages if t == topic]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture()
def listener(broker: Any) -> Iterator[Listener]:
    ears = Listener(broker.url)
    yield ears
    ears.close()


def test_detect_announces_its_sensors_and_keeps_their_state(
    broker: Any, listener: Listener, video: Path
) -> None:
    proc = run_cli(
        "detect", "--source", str(video), "--no-show",
        "--mqtt", broker.url + "/site/door-1", "--mqtt-discovery",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    wait_for(lambda: "offline" in listener.on(AVAILABILITY), what="the camera going offline")
    assert listener.on(AVAILABILITY) == ["online", "offline"]

    configs = {
        topic.split("/")[3]: json.loads(payload)
        for topic, payload, _ in listener.messages
        if topic.startswith(f"homeassistant/sensor/{NODE}/") and topic.endswith("/config")
    }
    assert set(configs) == SENSORS
    for object_id, config in configs.items():
        assert config["unique_id"] == f"{NODE}_{object_id}"
        assert config["state_topic"] == STATE and config["availability_topic"] == AVAILABILITY
        assert config["payload_available"] == "online"
        assert config["payload_not_available"] == "offline"
        assert config["device"]["identifiers"] == [NODE]
        assert config["device"]["name"] == "maskwatch site/door-1"
        assert config["origin"]["name"] == "maskwatch" and config["name"]
        assert config["value_template"].startswith("{{ value_json.")
    assert configs["people_in_view"]["state_class"] == "measurement"
    assert configs["people_seen"]["state_class"] == "total_increasing"
    assert configs["last_event_time"]["device_class"] == "timestamp"
    assert configs["last_event"]["json_attributes_topic"] == STATE

    states = [json.loads(payload) for payload in listener.on(STATE)]
    assert max(s["in_view"] for s in states) >= 3  # three people at once
    assert any(s["by_label"]["no_mask"] or s["by_label"]["mask"] for s in states)
    last = states[-1]
    assert last["in_view"] == 0 and sum(last["by_label"].values()) == 0  # everyone left
    assert last["people_seen"] >= 3
    assert last["last_event"].startswith("leave") and last["last_event_detail"]["kind"] == "leave"
    assert last["last_event_time"].endswith("+00:00")

    # Retained: Home Assistant starting later gets every config, the last state and "offline".
    late = Listener(broker.url)
    try:
        wait_for(lambda: len(late.messages) >= len(SENSORS) + 2, what="the retained messages")
        assert all(retained for _, _, retained in late.messages)
        assert late.on(AVAILABILITY) == ["offline"]
        assert json.loads(late.on(STATE)[0]) == last
    finally:
        late.close()


def test_serve_announces_each_server_camera(broker: Any, listener: Listener, video: Path) -> None:
    settings = ServeSettings(
        sources=[str(video)],
        watch=WatchSettings(mqtt=broker.url + "/site/hall", mqtt_discovery="homeassistant"),
    )
    with TestClient(create_app(settings)) as client:
        wait_for(
            lambda: any(json.loads(p)["people_seen"] >= 3 for p in listener.on(STATE_HALL)),
            60,
            "the server camera's state",
        )
        metrics = client.get("/metrics").text
    assert 'maskwatch_mqtt_connected{camera="camera 1"} 1.0' in metrics
    sent = re.search(
        r'maskwatch_mqtt_events_total\{camera="camera 1",result="sent"\} (\S+)', metrics
    )
    assert sent and float(sent.group(1)) >= 3  # three people appeared at least
    topics = {t for t, _, _ in listener.messages}
    assert {f"homeassistant/sensor/maskwatch_site_hall/{s}/config" for s in SENSORS} <= topics
    wait_for(lambda: "offline" in listener.on("maskwatch/maskwatch_site_hall/availability"))


@pytest.mark.slow
def test_a_camera_that_dies_is_shown_offline_by_its_last_will(
    broker: Any, listener: Listener
) -> None:
    stream = MjpegServer()
    detect = subprocess.Popen(
        [sys.executable, "-m", "maskwatch.cli", "detect", "--source", stream.url, "--no-show",
         "--mqtt", broker.url + "/site/door-1", "--mqtt-discovery"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(lambda: listener.on(STATE), 60, "a state update")
        assert listener.on(AVAILABILITY) == ["online"]
    finally:
        detect.send_signal(signal.SIGKILL)  # no clean goodbye: the broker sends the will
        detect.wait(timeout=10)
        stream.stop()
    wait_for(lambda: "offline" in listener.on(AVAILABILITY), 30, "the last will")


def test_discovery_needs_an_mqtt_url_and_a_plain_prefix(video: Path) -> None:
    proc = run_cli("detect", "--source", str(video), "--no-show", "--json", "-",
                   "--mqtt-discovery")  # fmt: skip
    assert_one_line_error(proc, "--mqtt-discovery needs the MQTT URL")
    proc = run_cli("detect", "--source", str(video), "--no-show", "--mqtt", "mqtt://h/t",
                   "--mqtt-discovery", "home/#")  # fmt: skip
    assert_one_line_error(proc, "without + or #")


@pytest.mark.parametrize(
    ("topic", "prefix", "needle"),
    [
        ("site/door", "a" * 40000, "at most 32768 bytes"),
        ("site/door", "$SYS", "the broker's"),
        ("site/%00door", "homeassistant", "no NUL"),
    ],
)
def test_a_topic_the_broker_cannot_take_is_one_line_before_connecting(
    broker: Any, video: Path, topic: str, prefix: str, needle: str
) -> None:
    proc = run_cli("detect", "--source", str(video), "--no-show",
                   "--mqtt", f"{broker.url}/{topic}", "--mqtt-discovery", prefix)  # fmt: skip
    assert_one_line_error(proc, needle)
    assert "Traceback" not in proc.stderr


def test_an_mqtt_url_error_never_shows_its_password(video: Path) -> None:
    proc = run_cli("detect", "--source", str(video), "--no-show",
                   "--mqtt", "mqtt://bob:hunter2@127.0.0.1:99999/site/door")  # fmt: skip
    assert_one_line_error(proc, "out of range")
    assert "hunter2" not in proc.stderr


def test_a_run_that_ends_does_not_warn_that_the_broker_was_lost(broker: Any, video: Path) -> None:
    proc = run_cli("detect", "--source", str(video), "--no-show",
                   "--mqtt", f"{broker.url}/site/door", "--mqtt-discovery")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr, proc.stderr


def test_a_prefix_and_topic_too_long_together_for_mqtt_are_refused_before_connecting() -> None:
    from maskwatch.errors import SettingError
    from maskwatch.hass import HomeAssistant

    HomeAssistant("site/" + "d" * 32000, "p" * 32000)  # each alone, and together, fit
    with pytest.raises(SettingError, match="more than MQTT's 65535"):
        HomeAssistant("site/" + "d" * 32760, "p" * 32768)
