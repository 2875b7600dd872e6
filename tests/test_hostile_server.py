"""`maskwatch serve` against hostile clients: the real CLI server (a subprocess on loopback with
short timeouts), raw sockets for chunked and dribbled bodies, a real WebSocket client, a real
Mosquitto, and image bombs made at test time. Each answer must be one `{"error": ...}`, the
server must keep answering, nothing may be spooled or stored, and memory must stay bounded."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import select
import shutil
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import cv2
import httpx
import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from conftest import (
    CHROMIUM,
    THREE_FACES,
    assert_one_line_error,
    free_port,
    listening,
    run_browser,
    run_cli,
    wait_for,
)
from maskwatch.web.app import ServeSettings, create_app
from maskwatch.web.board import REMOTE, Board
from maskwatch.web.guard import CROSS_SITE, WS_BUSY_REASON
from maskwatch.web.remote import remote_event

TOKEN = "t0k"
REQUEST_TIMEOUT = 1.5  # seconds; the server's --request-timeout here
IDLE_TIMEOUT = 1
MAX_SESSIONS = 2
SESSION_IDLE = 3  # seconds; the server's --session-idle-timeout here


def png_bomb(side: int = 40000) -> bytes:
    """A valid 1-bit PNG of side x side black pixels: a few hundred KB that OpenCV would decode
    into side*side*3 bytes (4.8 GB for 40000)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = bytes(1 + (side + 7) // 8)
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return png_bomb()  # so large that Pillow's own bomb guard refuses it


@pytest.fixture(scope="module")
def big() -> bytes:
    return png_bomb(10_000)  # 100 megapixels: over our budget, under Pillow's guard


@pytest.fixture(scope="module")
def broker_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(exe).exists():
        pytest.skip("needs mosquitto")
    port = free_port()
    conf = tmp_path_factory.mktemp("mosquitto") / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    process = subprocess.Popen([exe, "-c", str(conf)], stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: listening(port), what="mosquitto")
        yield f"mqtt://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


PROXY_NAME = "cams.example.org"  # --allow-host: a reverse proxy's public name


class Server:
    def __init__(self, root: Path, broker: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.spool = root / "spool"  # the server's TMPDIR: where uploads would be spooled
        self.spool.mkdir()
        self.own: set[Path] = set()
        self.events = root / "events.db"
        self.log = root / "server.log"
        self._log_file = open(self.log, "w")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "maskwatch.cli", "serve", "--port", str(self.port),
             "--token", TOKEN, "--max-upload-mb", "1", "--events", str(self.events),
             "--mqtt", broker + "/site/#", "--request-timeout", str(REQUEST_TIMEOUT),
             "--idle-timeout", str(IDLE_TIMEOUT), "--max-sessions", str(MAX_SESSIONS),
             "--session-idle-timeout", str(SESSION_IDLE), "--allow-host", PROXY_NAME,
             "--allow-host", "*.site.example"],
            stdout=self._log_file, stderr=subprocess.STDOUT,
            env={**os.environ, "TMPDIR": str(self.spool)},
        )  # fmt: skip
        self.http = httpx.Client(
            base_url=self.base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        )

    def healthy(self) -> bool:
        try:
            return self.http.get("/api/v1/health").status_code == 200
        except httpx.HTTPError:
            return False

    def _status_mb(self, field: str) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        raise AssertionError(f"no {field}")

    def peak_rss_mb(self) -> float:
        return self._status_mb("VmHWM")

    def rss_mb(self) -> float:
        return self._status_mb("VmRSS")

    def open_files(self) -> int:
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))

    def spooled(self) -> list[Path]:
        """Files the server made in its TMPDIR since it started (uploads spooled to disk)."""
        return [p for p in self.spool.rglob("*") if p.is_file() and p not in self.own]

    def close(self) -> None:
        self.http.close()
        self.process.terminate()
        self.process.wait(timeout=20)
        self._log_file.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, broker_url: str) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("serve"), broker_url)
    try:
        wait_for(s.healthy, timeout=60, what="the server")
        s.own = set(s.spool.rglob("*"))  # made by its libraries at startup
        yield s
    finally:
        s.close()
    assert "Traceback" not in s.log.read_text(), s.log.read_text()


def test_the_start_line_is_the_users_own_link_with_its_token(server: Server) -> None:
    """Every message is redacted but the one that hands the user the link they need."""
    lines = [x for x in server.log.read_text().splitlines() if "open http" in x]
    assert len(lines) == 1 and f"/?token={quote(TOKEN)} " in lines[0], lines


def assert_error(response: httpx.Response, status: int, *words: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str), body
    for word in words:
        assert word in body["error"], body["error"]
    return str(body["error"])


def raw_head(server: Server, head: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(head.encode())
    return sock


def upload_head(token: str, length: int | None = None) -> str:
    size = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return (
        "POST /api/v1/detect HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {token}\r\n"
        "Content-Type: multipart/form-data; boundary=zz\r\n"
        f"{size}\r\n\r\n"
    )


PART = (
    b'--zz\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n'
    b"Content-Type: image/jpeg\r\n\r\n"
)


def read_response(sock: socket.socket) -> tuple[int, dict[str, Any], bytes]:
    """Status, JSON body and raw head of one response on a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        part = sock.recv(65536)
        assert part, f"closed without a response: {data!r}"
        data += part
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    while len(body) < length:
        part = sock.recv(65536)
        if not part:
            break
        body += part
    return int(head.split()[1]), json.loads(body[:length]), head


def stream_until_answered(sock: socket.socket, total: int, chunk: int = 64 * 1024) -> int:
    """Send up to `total` bytes of a chunked body, stopping as soon as the server answers or
    closes; returns the bytes sent."""
    sent = 0
    piece = b"%x\r\n" % chunk + b"\0" * chunk + b"\r\n"
    while sent < total:
        if select.select([sock], [], [], 0)[0]:
            break
        try:
            sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            break
        sent += chunk
    return sent


BIG = 50 * 2**20


def test_a_wrong_token_is_refused_before_the_body_is_read(server: Server) -> None:
    with raw_head(server, upload_head("wrong")) as sock:
        status, body, head = read_response(sock)  # answered with nothing of the body sent
        assert status == 401 and "not this server's" in body["error"]
        assert b"connection: close" in head.lower()
        sent = stream_until_answered(sock, BIG)
    assert sent < BIG, "the server kept reading a refused body"
    assert server.spooled() == []
    assert server.healthy()


def test_a_chunked_upload_over_the_limit_is_cut_off_while_it_streams(server: Server) -> None:
    with raw_head(server, upload_head(TOKEN)) as sock:
        sock.sendall(b"%x\r\n%s\r\n" % (len(PART), PART))
        sent = stream_until_answered(sock, BIG)
        status, body, _ = read_response(sock)
    assert status == 413 and "larger than 1 MB" in body["error"]
    assert sent < 8 * 2**20, f"{sent} bytes accepted past a 1 MB limit"
    assert server.spooled() == []
    declared = server.http.post(
        "/api/v1/detect", content=b"x" * (2 * 2**20), headers={"Content-Type": "image/png"}
    )
    assert_error(declared, 413, "--max-upload-mb")


def test_a_dribbled_body_gets_408_and_a_dribbled_head_is_closed(server: Server) -> None:
    with raw_head(server, upload_head(TOKEN, length=100_000)) as sock:
        sock.sendall(PART)
        for _ in range(200):  # would take 60 s to finish
            if select.select([sock], [], [], 0.3)[0]:
                break
            sock.sendall(b"x")
        status, body, _ = read_response(sock)
    assert status == 408 and "did not arrive" in body["error"]

    with raw_head(server, "GET /api/v1/health HTTP/1.1\r\n") as sock:
        closed = False
        for _ in range(200):
            if select.select([sock], [], [], 0.3)[0]:
                try:
                    closed = sock.recv(100) == b""
                except ConnectionResetError:  # closed while our last byte was on its way
                    closed = True
                break
            try:
                sock.sendall(b"X")
            except (BrokenPipeError, ConnectionResetError):  # closed between two looks
                closed = True
                break
    assert closed, "a head dribbled for a minute was not cut off"
    assert server.healthy()


def test_idle_connections_neither_stop_the_server_nor_stay_open(server: Server) -> None:
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(300)]
    try:
        assert server.healthy()
        open_ = list(idle)
        give_up = time.monotonic() + 60  # far beyond the server's 1 s idle timeout
        while open_ and time.monotonic() < give_up:
            readable = select.select(open_, [], [], 0.3)[0]
            open_ = [s for s in open_ if s not in readable or s.recv(1) != b""]
        assert not open_, f"{len(open_)} of 300 idle connections still open"
    finally:
        for s in idle:
            s.close()
    # Meanwhile the same idle timeout closed the test client's own kept-alive connection, so a
    # first probe may meet it closing: the server must answer within a few seconds.
    wait_for(server.healthy, timeout=5, what="the server to answer after the idle connections")


def test_every_error_of_the_api_is_one_json_shape(server: Server) -> None:
    http = server.http
    photo = THREE_FACES.read_bytes()
    assert_error(http.get("/nowhere"), 404)
    assert_error(http.get("/api/v1/cameras/7/mjpeg"), 404, "no such camera")
    assert_error(httpx.get(server.base + "/api/v1/stats"), 401, "needs a token")
    assert_error(httpx.get(server.base + "/nowhere"), 401)  # unknown paths reveal nothing
    assert_error(http.get("/api/v1/detect"), 405)
    assert_error(http.post("/api/v1/detect"), 422, "image")
    assert_error(http.post("/api/v1/detect", json={"image": "x"}), 422, "image")
    assert_error(http.get("/api/v1/stats", params={"by": "week"}), 422, "minute")
    two = [("image", ("a.jpg", photo)), ("image", ("b.jpg", photo))]
    assert_error(http.post("/api/v1/detect", files=two), 400, "files")
    extra = http.post("/api/v1/detect", files={"image": ("a.jpg", photo)}, data={"x": "1"})
    assert_error(extra, 400, "fields")
    assert_error(http.post("/api/v1/detect", files={"image": ("x.jpg", b"junk")}), 415)
    assert_error(http.post("/api/v1/detect", files={"image": ("e.jpg", b"")}), 415, "empty")
    ok = http.post("/api/v1/detect", files={"image": ("door.jpg", photo)})
    assert ok.status_code == 200 and ok.json()["faces"]
    spec = http.get("/openapi.json").json()
    detect = spec["paths"]["/api/v1/detect"]["post"]
    for status in ("400", "401", "408", "413", "415", "422", "500", "503"):
        schema = detect["responses"][status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/Error"}, status
    assert {"HTTPBearer", "APIKeyQuery"} <= set(spec["components"]["securitySchemes"])


def test_a_pixel_bomb_is_refused_from_its_header_by_upload_and_websocket(
    server: Server, bomb: bytes, big: bytes, three_faces: np.ndarray
) -> None:
    before = server.peak_rss_mb()
    refused = server.http.post("/api/v1/detect", files={"image": ("bomb.png", bomb)})
    assert_error(refused, 413, "bomb.png", "megapixels")
    refused = server.http.post("/api/v1/detect", files={"image": ("big.png", big)})
    assert_error(refused, 413, "10000x10000", "50 megapixels")
    frame = cv2.imencode(".jpg", cv2.resize(three_faces, (640, 480)))[1].tobytes()
    url = f"ws://127.0.0.1:{server.port}/ws/detect"
    with connect(url, additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
        ws.send("hello")
        assert "binary" in json.loads(ws.recv(timeout=10))["error"]
        ws.send(bomb)
        assert "megapixels" in json.loads(ws.recv(timeout=10))["error"]
        ws.send(big)
        assert "1920" in json.loads(ws.recv(timeout=10))["error"]
        ws.send(frame)
        assert json.loads(ws.recv(timeout=30))["faces"], "the session went on"
    assert server.peak_rss_mb() - before < 300, "a bomb was decoded"
    assert server.healthy()


def test_the_websocket_takes_the_token_by_query_and_refuses_without_it(server: Server) -> None:
    url = f"ws://127.0.0.1:{server.port}/ws/detect"
    with connect(url + f"?token={TOKEN}") as ws:
        ws.send("hi")
        assert "error" in json.loads(ws.recv(timeout=10))
    for address, reason in (
        (url, "this server needs a token"),
        (url + "?token=wrong", "the token sent is not this server's"),
    ):
        with connect(address) as ws, pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        assert closed.value.rcvd.reason.startswith(reason)


def handshake(server: Server, host: str) -> bytes:
    """The status line a WebSocket handshake naming `host` gets."""
    head = (
        f"GET /ws/detect?token={TOKEN} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    )
    with raw_head(server, head) as sock:
        return sock.recv(4096).split(b"\r\n", 1)[0]


def test_on_loopback_only_loopback_host_names_are_answered(server: Server) -> None:
    """DNS rebinding: a page of attacker.example, its name pointed at 127.0.0.1 once loaded,
    reaches the server with its own name in Host; the server answers loopback's names only."""
    port = server.port
    for host in (f"attacker.example:{port}", "attacker.example", f"127.0.0.1.nip.io:{port}"):
        refused = server.http.get("/api/v1/stats", headers={"Host": host})
        assert refused.status_code == 400, host
        assert handshake(server, host).startswith(b"HTTP/1.1 400"), host
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "LocalHost"):
        assert server.http.get("/api/v1/stats", headers={"Host": host}).status_code == 200, host
        assert handshake(server, host) == b"HTTP/1.1 101 Switching Protocols", host
    for host in (PROXY_NAME, "door.site.example:443"):  # --allow-host's names: a proxy's
        assert server.http.get("/api/v1/stats", headers={"Host": host}).status_code == 200, host
    assert server.http.get("/api/v1/stats", headers={"Host": "site.example"}).status_code == 400


def test_a_page_of_another_site_can_neither_stream_nor_upload(
    server: Server, three_faces: np.ndarray
) -> None:
    """A browser says which page opened a WebSocket or sent an upload (Origin): another site's
    page, with the token or without, could otherwise feed the board and the event log."""
    url = f"ws://127.0.0.1:{server.port}/ws/detect?token={TOKEN}"
    with (
        connect(url, origin="http://evil.example") as ws,
        pytest.raises(ConnectionClosed) as closed,
    ):
        ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert closed.value.rcvd.reason == CROSS_SITE
    with connect(url, origin=server.base) as ws:  # the server's own page
        ws.send(cv2.imencode(".jpg", three_faces)[1].tobytes())
        assert json.loads(ws.recv(timeout=30))["faces"]
    photo = {"image": ("door.jpg", cv2.imencode(".jpg", three_faces)[1].tobytes())}
    foreign = server.http.post("/api/v1/detect", files=photo, headers={"Origin": "null"})
    assert_error(foreign, 403, CROSS_SITE, "Origin: null")
    own = server.http.post("/api/v1/detect", files=photo, headers={"Origin": server.base})
    assert own.status_code == 200 and own.json()["faces"]
    for origin in (f"https://{PROXY_NAME}", "https://door.site.example"):  # behind a proxy
        with connect(url, origin=origin) as ws:
            ws.send(cv2.imencode(".jpg", three_faces)[1].tobytes())
            assert json.loads(ws.recv(timeout=30))["faces"], origin
    evil = server.http.post(
        "/api/v1/detect", files=photo, headers={"Origin": "https://site.example.evil"}
    )
    assert_error(evil, 403, CROSS_SITE, "Origin: https://site.example.evil")
    # Reading needs no such check: the browser keeps the answer from the other site's page.
    assert server.http.get("/api/v1/stats", headers={"Origin": "http://evil.example"}).is_success


def test_pages_may_not_be_framed_sniffed_or_run_code_written_into_them(server: Server) -> None:
    for path in ("/", "/dashboard", "/docs", "/redoc"):
        page = httpx.get(server.base + path)
        assert page.headers["x-content-type-options"] == "nosniff", path
        assert page.headers["referrer-policy"] == "no-referrer", path  # the page's ?token=
        policy = page.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in policy and "default-src 'self'" in policy, path
    for path in ("/", "/dashboard"):  # everything they run is a file of the package
        page = httpx.get(server.base + path)
        assert "unsafe-inline" not in page.headers["content-security-policy"]
        assert "<script>" not in page.text and "<style" not in page.text, path
        assert not re.search(r"<[^>]*\s(on\w+|style)\s*=", page.text), path  # in any tag


def mqtt_event(camera: str, now: float) -> dict[str, Any]:
    return {"camera": camera, "time": now, "source": "door", "frame": 1, "kind": "appear",
            "track": 1, "label": None, "confidence": 0.9, "box": [1, 2, 3, 4]}  # fmt: skip


@pytest.fixture
def publisher(broker_url: str, server: Server) -> Iterator[Any]:
    """A paho client on the broker, once the server's subscription is up."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", int(broker_url.rsplit(":", 1)[1]))
    client.loop_start()
    try:

        def subscribed() -> bool:  # the server's subscription is up once a probe arrives
            probe = mqtt_event("site/probe", time.time())
            client.publish("site/probe", json.dumps(probe), qos=1)
            time.sleep(0.2)
            return "site/probe" in server.http.get("/api/v1/stats").json()["cameras"]

        wait_for(subscribed, what="the server's MQTT subscription")
        yield client
    finally:
        client.loop_stop()
        client.disconnect()


def test_hostile_mqtt_events_are_dropped_and_stats_keep_answering(
    server: Server, publisher: Any
) -> None:
    now = time.time()
    good = mqtt_event("site/door", now)
    hostile = [
        {**good, "time": 1e300},
        {**good, "time": -5},
        {**good, "time": "nan"},
        {**good, "label": "clown"},
        {**good, "kind": "explode"},
        {**good, "camera": "c" * 5000},
        {**good, "box": [1, 2, 3]},
        {**good, "track": "inf"},
        {**good, "track": True},
        {**good, "frame": "2"},
        {**good, "time": str(now)},
    ]
    for payload in hostile:
        publisher.publish("site/door", json.dumps(payload), qos=1).wait_for_publish(10)
    for raw in (b"not json", b"[" * 4000, b"{}" + b" " * 10_000):
        publisher.publish("site/door", raw, qos=1).wait_for_publish(10)
    publisher.publish("site/door", json.dumps(good), qos=1).wait_for_publish(10)
    stats = wait_for(
        lambda: (
            (s := server.http.get("/api/v1/stats")).status_code == 200
            and s.json()["cameras"].get("site/door")
            and s.json()
        ),
        what="the valid event",
    )
    assert stats["cameras"]["site/door"] == {"in_view": {"unsettled": 1}, "people_seen": 1}
    with sqlite3.connect(server.events) as db:
        times = [t for (t,) in db.execute("SELECT time FROM events e JOIN runs r ON r.id = e.run "
                                          "WHERE r.source = 'site/door'")]  # fmt: skip
    assert times == [pytest.approx(now, abs=1)]
    warnings = server.log.read_text().count("ignoring an invalid event")
    assert warnings == 1, "invalid events are warned about at most once per interval"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("track", True, "track: Input should be a valid integer"),
        ("frame", 1.5, "frame: Input should be a valid integer"),
        ("frame", "1", "frame: Input should be a valid integer"),
        ("time", "1800000000", "time: Input should be a valid number"),
        ("time", 1e12, "time: Value error, not between 2000 and a day from now"),
        ("confidence", "0.9", "confidence: Input should be a valid number"),
        ("confidence", False, "confidence: Input should be a valid number"),
        ("source", 5, "source: Input should be a valid string"),
        ("camera", None, "camera: Input should be a valid string"),
        ("label", ["no_mask"], "label: Input should be 'mask', 'no_mask', 'incorrect' or"),
        ("previous", {}, "previous: Input should be 'mask', 'no_mask', 'incorrect' or"),
        ("box", [1, "2", 3, 4], "box.1: Input should be a valid number"),
        ("box", [True, 2, 3, 4], "box.0: Input should be a valid number"),
        ("box", [1, 2, 3, 4, 5], "box: List should have at most 4 items"),
        ("box", "1,2,3,4", "box: Input should be a valid list"),
        ("box", [1, 2, 3, float("nan")], "box.3: Input should be a finite number"),
    ],
)
def test_mqtt_event_fields_must_have_their_json_types(
    field: str, value: object, message: str
) -> None:
    """Numbers once came as strings or booleans (`track: true` was stored as track 1)."""
    good = mqtt_event("door", time.time())
    assert remote_event("site/door", good)[1].track == 1
    with pytest.raises(ValueError) as refused:
        remote_event("site/door", {**good, field: value})
    assert str(refused.value).startswith(message)
    assert "\n" not in str(refused.value)


def test_many_mqtt_camera_names_hold_neither_files_nor_memory(
    server: Server, publisher: Any
) -> None:
    names = 400  # the server keeps 256 cameras; each used to hold ~2 open files of the log
    opened = server.open_files()
    now = time.time()
    for i in range(names):
        publisher.publish(f"site/cam-{i}", json.dumps(mqtt_event(f"cam-{i}", now)), qos=1)
    last = f"cam-{names - 1}"  # one publisher, QoS 1: it arrives after all the others
    stats = wait_for(
        lambda: (s := server.http.get("/api/v1/stats").json())["cameras"].get(last) and s,
        what="the last camera's event",
    )
    assert len(stats["cameras"]) <= 256 and "cam-0" not in stats["cameras"]
    assert server.open_files() - opened < 10, "the server holds files per camera name"
    with sqlite3.connect(server.events) as db:
        stored = db.execute(
            "SELECT COUNT(DISTINCT r.source) FROM events e JOIN runs r ON r.id = e.run "
            "WHERE r.source LIKE 'cam-%'"
        ).fetchone()[0]
    assert stored == names, "every valid event is still stored, under its camera's name"
    warnings = server.log.read_text().count("forgetting the least recently seen")
    assert 1 <= warnings < names - 256, "forgotten cameras are warned about, rate-limited"
    assert server.healthy()


def test_the_board_forgets_the_least_recently_seen_camera_never_a_running_one(
    tmp_path: Path,
) -> None:
    opened = len(os.listdir("/proc/self/fd"))
    board = Board(tmp_path / "events.db", max_cameras=3)
    board.camera("door")  # a running source (a browser session, a --source)

    def report(name: str) -> None:
        camera, event = remote_event("site/x", mqtt_event(name, time.time()))
        board.add(camera, [event], run=REMOTE)

    for name in ("a", "b", "c", "d"):
        report(name)
    assert set(board.live()["cameras"]) == {"door", "c", "d"}
    assert len(os.listdir("/proc/self/fd")) - opened <= 3, "one log connection (and its WAL)"
    board.end_run("door")
    report("e")
    report("a")  # back again, as a new camera
    assert set(board.live()["cameras"]) == {"door", "e", "a"}
    board.close()
    with sqlite3.connect(tmp_path / "events.db") as db:
        sources = [s for (s,) in db.execute("SELECT r.source FROM events e JOIN runs r "
                                            "ON r.id = e.run ORDER BY e.id")]  # fmt: skip
    assert sources == ["a", "b", "c", "d", "e", "a"], "every event stored, under its camera"


def frame_jpeg(three_faces: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", cv2.resize(three_faces, (640, 480)))[1].tobytes()


def closed_with(ws: Any) -> tuple[int, str]:
    """The close code and reason the server ended `ws` with (waiting for it)."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            ws.recv(timeout=30)
    assert closed.value.rcvd is not None, "closed without a close frame"
    return closed.value.rcvd.code, closed.value.rcvd.reason


def test_websocket_sessions_beyond_the_limit_are_told_to_try_again_later(
    server: Server, three_faces: np.ndarray
) -> None:
    frame = frame_jpeg(three_faces)
    url = f"ws://127.0.0.1:{server.port}/ws/detect?token={TOKEN}"
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(connect(url)) for _ in range(MAX_SESSIONS + 6)]
        sessions, refused = sockets[:MAX_SESSIONS], sockets[MAX_SESSIONS:]
        for ws in sessions:
            ws.send(frame)
        for ws in sessions:
            assert json.loads(ws.recv(timeout=60))["faces"]
        for ws in refused:
            assert closed_with(ws) == (1013, WS_BUSY_REASON)
        assert server.rss_mb() < 1024, "the documented peak"
        sessions[0].close()

        def one_more() -> bool:  # a place is free once the server has seen that close
            try:
                with connect(url) as ws:
                    ws.send(frame)
                    return "faces" in json.loads(ws.recv(timeout=60))
            except ConnectionClosed:
                return False

        wait_for(one_more, what="a session in the freed place")
    assert server.healthy()


def test_an_idle_websocket_session_is_closed_with_a_reason(
    server: Server, three_faces: np.ndarray
) -> None:
    url = f"ws://127.0.0.1:{server.port}/ws/detect?token={TOKEN}"
    with connect(url) as ws:
        ws.send(frame_jpeg(three_faces))
        assert json.loads(ws.recv(timeout=60))["faces"]
        code, reason = closed_with(ws)  # then nothing is sent
    assert (code, reason) == (1000, f"closed after {SESSION_IDLE} s without a frame")


def test_pages_answer_head_and_no_answer_is_an_empty_redirect(server: Server) -> None:
    for path in ("/", "/dashboard"):
        head = httpx.head(server.base + path)
        assert head.status_code == 200 and head.content == b"", path
        assert head.headers["content-type"].startswith("text/html")
    assert_error(server.http.get("/api/v1/stats/"), 404)
    assert_error(server.http.get("/dashboard/"), 404)
    assert_error(httpx.get(server.base + "/api/v1/stats/"), 401)


def test_a_malformed_multipart_body_leaves_no_raw_line_in_the_log(server: Server) -> None:
    kind = {"Content-Type": "multipart/form-data; boundary=zz"}
    for body in (b"garbage", b"--garbage", b"--zz\r\nbad\r\n\r\n"):
        assert_error(server.http.post("/api/v1/detect", content=body, headers=kind), 400)
    assert "boundary" not in server.log.read_text()
    assert "in header" not in server.log.read_text()


def test_uploads_beyond_the_bound_get_503_with_retry_after(tmp_path: Path) -> None:
    photo = THREE_FACES.read_bytes()
    app = create_app(ServeSettings(max_uploads=2))

    async def burst() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            files = {"image": ("door.jpg", photo)}
            return list(
                await asyncio.gather(
                    *(client.post("/api/v1/detect", files=files) for _ in range(4))
                )
            )

    replies = asyncio.run(burst())
    statuses = sorted(r.status_code for r in replies)
    assert statuses == [200, 200, 503, 503], statuses
    busy = next(r for r in replies if r.status_code == 503)
    assert_error(busy, 503, "busy")
    assert busy.headers["retry-after"] == "1"


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--port", "99999", "from 1 to 65535"),
        ("--port", "0", "from 1 to 65535"),
        ("--max-pixels", "0", "--max-pixels"),
        ("--max-upload-mb", "nan", "finite"),
        ("--request-timeout", "-1", "--request-timeout"),
        ("--idle-timeout", "0", "--idle-timeout"),
        ("--max-sessions", "0", "--max-sessions"),
        ("--session-idle-timeout", "inf", "--session-idle-timeout"),
        ("--max-uploads", "0", "--max-uploads"),
        ("--detectors", "65", "--detectors"),
    ],
)
def test_serve_options_are_checked(option: str, value: str, expected: str) -> None:
    assert_one_line_error(run_cli("serve", option, value), expected)


def test_a_port_in_use_is_one_line_before_any_start_message() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        proc = run_cli("serve", "--port", str(port))
    assert_one_line_error(proc, f"cannot serve on 127.0.0.1:{port}", "in use")
    assert "open http" not in proc.stderr


@pytest.mark.slow
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium")
def test_the_page_says_it_needs_a_token_and_stops_retrying(server: Server) -> None:
    out = run_browser("refused.mjs", server.base, timeout=120)
    assert out["message"].startswith("this server needs a token")
    assert out["sockets"] == 1, "the page kept retrying a refused connection"


@pytest.mark.slow
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium")
def test_the_page_says_the_server_is_busy_and_retries_later(server: Server) -> None:
    url = f"ws://127.0.0.1:{server.port}/ws/detect?token={TOKEN}"
    done = threading.Event()

    def hold() -> None:  # every place taken, and kept from idling out
        with contextlib.ExitStack() as stack:
            sessions = [stack.enter_context(connect(url)) for _ in range(MAX_SESSIONS)]
            while not done.wait(0.5):
                for ws in sessions:
                    ws.send("still here")
                    ws.recv(timeout=10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        out = run_browser(
            "refused.mjs", f"{server.base}/?token={TOKEN}", "the server is busy", timeout=120
        )
    finally:
        done.set()
        holder.join()
    assert out["message"] == f"{WS_BUSY_REASON}; retrying in 15 s"
    assert out["sockets"] == 1, "the page retried a busy server at once"
