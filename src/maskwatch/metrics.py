"""Metrics for operators in Prometheus's text format (prometheus-client), each process's in a
registry of its own, so that several servers or runs in one process never share counts.

Per camera: frames processed and frames per second, faces by label, events by kind, labels
settled, people in view now by settled label, frames a live source dropped, reconnects, alerts
and MQTT deliveries; for `serve`, request latency by route template. `serve` answers them at
/metrics (with the token its other API paths need); `detect --metrics-port` on a port of its own
(`MetricsServer`, with the same rule: a token, or --no-auth, off loopback).

A watch counts through two small outputs (`CameraMetrics.watch`). Counts that other objects
keep already (a live source's dropped frames and reconnects, the alert dispatcher's, the MQTT
publisher's) are read from them when scraped, not counted twice.
"""

from __future__ import annotations

import hmac
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    make_wsgi_app,
)
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from maskwatch.errors import SettingError
from maskwatch.presence import IN_VIEW_LABELS, InView
from maskwatch.types import CHANGE, SETTLE, FrameResult

if TYPE_CHECKING:
    import numpy as np

    from maskwatch.alerts import AlertDispatcher
    from maskwatch.events import Event
    from maskwatch.mqtt import MqttPublisher, MqttSubscriber
    from maskwatch.watch import Watch

CONTENT_TYPE = CONTENT_TYPE_LATEST  # of the text format
SCRAPE_TIMEOUT = 10.0  # seconds a metrics connection may take to ask
FPS_WINDOW = 10.0  # seconds of frames the frames-per-second figure is measured over


class FrameRate:
    """Frames per second over the last FPS_WINDOW seconds, and when the last frame came."""

    def __init__(self) -> None:
        self.last: float | None = None  # Unix time of the newest frame
        self._times: deque[float] = deque()

    def tick(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self.last = now
        self._times.append(now)
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._times and now - self._times[0] > FPS_WINDOW:
            self._times.popleft()

    def fps(self, now: float | None = None) -> float:
        """0 when no frame came in the last FPS_WINDOW seconds."""
        now = time.time() if now is None else now
        self._trim(now)
        if len(self._times) < 2:
            return 0.0
        span = max(now - self._times[0], self._times[-1] - self._times[0])
        return (len(self._times) - 1) / span if span > 0 else 0.0


class _Run:
    """One watch of a camera, counted: a frame output (frames, faces, frame rate) whose
    `events` is the event output (events, settled labels, people in view)."""

    def __init__(self, camera: CameraMetrics) -> None:
        self.camera = camera
        self.rate = FrameRate()
        self.events = _RunEvents(self)
        self._in_view = InView()
        self._lock = threading.Lock()

    def write(self, result: FrameResult) -> None:
        metrics, name = self.camera.metrics, self.camera.name
        metrics.frames.labels(name).inc()
        for label in result.faces.labels:
            metrics.faces.labels(name, label).inc()
        with self._lock:
            self.rate.tick()

    def close(self, ok: bool = True) -> None:
        self.camera.ended(self)

    def count(self, events: Sequence[Event]) -> None:
        metrics, name = self.camera.metrics, self.camera.name
        for event in events:
            metrics.events.labels(name, str(event.kind)).inc()
            if event.kind in (SETTLE, CHANGE) and event.label is not None:
                metrics.settled.labels(name, event.label).inc()
        with self._lock:
            self._in_view.update(events)

    def in_view(self) -> dict[str, int]:
        with self._lock:
            return self._in_view.counts()

    def fps(self) -> float:
        with self._lock:
            return self.rate.fps()


class _RunEvents:
    def __init__(self, run: _Run) -> None:
        self.run = run

    def write(self, events: Sequence[Event], image: np.ndarray | None = None) -> None:
        self.run.count(events)

    def close(self) -> None:
        pass


class CameraMetrics:
    """The metrics of one camera name: any number of watches (browser sessions share one
    name) and the objects whose own counts are read when scraped."""

    def __init__(self, metrics: Metrics, name: str) -> None:
        self.metrics = metrics
        self.name = name
        self.last_frame: float | None = None
        self.sources: list[Callable[[], object]] = []
        self.alerts: list[AlertDispatcher] = []
        self.publishers: list[MqttPublisher] = []
        self._runs: list[_Run] = []
        self._lock = threading.Lock()
        metrics.frames.labels(name)  # shown at 0 before the first frame

    def watch(
        self,
        watch: Watch,
        alerts: AlertDispatcher | None = None,
        mqtt: MqttPublisher | None = None,
    ) -> None:
        """Count `watch`'s frames and events, and read its alerts' and MQTT publisher's counts."""
        run = _Run(self)
        with self._lock:
            self._runs.append(run)
            self.alerts += [alerts] if alerts is not None else []
            self.publishers += [mqtt] if mqtt is not None else []
        watch.add(run)
        watch.add_events(run.events)

    def follow(self, source: Callable[[], object]) -> None:
        """Read dropped frames and reconnects from the source `source()` gives (None before it
        opens; a file source counts neither)."""
        with self._lock:
            self.sources.append(source)

    def ended(self, run: _Run) -> None:
        with self._lock:
            if run in self._runs:
                self._runs.remove(run)
                self.last_frame = max(self.last_frame or 0.0, run.rate.last or 0.0) or None

    def fps(self) -> float:
        with self._lock:
            runs = list(self._runs)
        return sum(run.fps() for run in runs)

    def in_view(self) -> dict[str, int]:
        """People in view now by settled label, over its running watches."""
        with self._lock:
            runs = list(self._runs)
        total = dict.fromkeys(IN_VIEW_LABELS, 0)
        for run in runs:
            for label, n in run.in_view().items():
                total[label] += n
        return total

    def newest_frame(self) -> float | None:
        """Unix time of the newest frame of any of its watches, ended ones included."""
        with self._lock:
            times = [self.last_frame] + [run.rate.last for run in self._runs]
        return max((t for t in times if t is not None), default=None)

    def activity(self) -> dict[str, Any]:
        """When its newest frame came (ISO 8601, UTC; None before the first) and its frames
        per second now, as /api/v1/health shows them."""
        newest = self.newest_frame()
        last = None if newest is None else datetime.fromtimestamp(newest, UTC).isoformat()
        return {"last_frame": last, "fps": round(self.fps(), 2)}

    def live_counts(self) -> tuple[int, int]:
        """Frames dropped and reconnects of its live sources."""
        dropped = reconnects = 0
        for source in list(self.sources):
            counted = source()
            dropped += getattr(counted, "dropped", 0)
            reconnects += getattr(counted, "reconnects", 0)
        return dropped, reconnects


class Metrics:
    """Every metric of one process (a `serve`, a `detect` run), in its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.frames = Counter("maskwatch_frames", "Frames processed", ["camera"], registry=registry)
        self.faces = Counter(
            "maskwatch_faces",
            "Faces found in processed frames, by label (uncertain included)",
            ["camera", "label"],
            registry=registry,
        )
        self.events = Counter(
            "maskwatch_events",
            "Events by kind: a person appears, their label settles or changes, they leave",
            ["camera", "kind"],
            registry=registry,
        )
        self.settled = Counter(
            "maskwatch_labels_settled",
            "Labels that settled or changed, by the label settled on",
            ["camera", "label"],
            registry=registry,
        )
        self.requests = Histogram(
            "maskwatch_http_request_duration_seconds",
            "HTTP requests answered, by route template, method and status",
            ["route", "method", "status"],
            registry=registry,
        )
        self.subscribers: list[MqttSubscriber] = []
        self._cameras: dict[str, CameraMetrics] = {}
        self._lock = threading.Lock()
        registry.register(_Readings(self))

    def camera(self, name: str) -> CameraMetrics:
        """The metrics of the camera called `name` (made on first use)."""
        with self._lock:
            camera = self._cameras.get(name)
            if camera is None:
                camera = self._cameras[name] = CameraMetrics(self, name)
            return camera

    def cameras(self) -> list[CameraMetrics]:
        with self._lock:
            return list(self._cameras.values())

    def text(self) -> bytes:
        """The whole registry in Prometheus's text format."""
        return generate_latest(self.registry)


class _Readings:
    """A collector of the counts other objects keep, read at each scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        in_view = GaugeMetricFamily(
            "maskwatch_people_in_view",
            "People in view now, by settled label (unsettled until their label settles)",
            labels=["camera", "label"],
        )
        fps = GaugeMetricFamily(
            "maskwatch_camera_fps",
            f"Frames processed per second over the last {FPS_WINDOW:g} s",
            labels=["camera"],
        )
        dropped = CounterMetricFamily(
            "maskwatch_dropped_frames",
            "Frames a live source read but replaced by a newer one before they were processed",
            labels=["camera"],
        )
        reconnects = CounterMetricFamily(
            "maskwatch_reconnects", "Times a dropped stream was reopened", labels=["camera"]
        )
        alerts = CounterMetricFamily(
            "maskwatch_alerts",
            "Alerts by result: sent, failed, limited (held back by the rate limits), dropped "
            "(the queue was full)",
            labels=["camera", "result"],
        )
        mqtt = CounterMetricFamily(
            "maskwatch_mqtt_events",
            "Events published over MQTT by result: sent, or dropped (pushed out of the queue "
            "kept while the broker was away)",
            labels=["camera", "result"],
        )
        queued = GaugeMetricFamily(
            "maskwatch_mqtt_queued",
            "Events waiting for the MQTT broker to come back",
            labels=["camera"],
        )
        connected = GaugeMetricFamily(
            "maskwatch_mqtt_connected",
            "1 while the camera's MQTT connection is up, else 0",
            labels=["camera"],
        )
        for camera in self.metrics.cameras():
            name = camera.name
            for label, n in camera.in_view().items():
                in_view.add_metric([name, label], n)
            fps.add_metric([name], camera.fps())
            lost, reopened = camera.live_counts()
            dropped.add_metric([name], lost)
            reconnects.add_metric([name], reopened)
            if camera.alerts:
                for result in ("sent", "failed", "limited", "dropped"):
                    count = sum(getattr(a.counts, result) for a in camera.alerts)
                    alerts.add_metric([name, result], count)
            if camera.publishers:
                mqtt.add_metric([name, "sent"], sum(p.sent for p in camera.publishers))
                mqtt.add_metric([name, "dropped"], sum(p.dropped for p in camera.publishers))
                queued.add_metric([name], sum(p.queued for p in camera.publishers))
                connected.add_metric([name], min(p.connected for p in camera.publishers))
        invalid = CounterMetricFamily(
            "maskwatch_mqtt_invalid_messages",
            "Messages received over MQTT that were not valid events (dropped)",
        )
        invalid.add_metric([], sum(s.dropped for s in self.metrics.subscribers))
        yield from (in_view, fps, dropped, reconnects, alerts, mqtt, queued, connected, invalid)


def _route(routes: Iterable[Any], scope: dict[str, Any]) -> str:
    """The template of the route `scope` goes to (/api/v1/cameras/{index}/mjpeg), so that raw
    paths never become labels; 'other' for a path no route has."""
    from starlette.routing import Match

    for route in routes:
        match, _ = route.matches(scope)
        if match != Match.NONE:
            return str(getattr(route, "path", "other"))
    return "other"


class RequestTimer:
    """ASGI middleware timing each HTTP request into `metrics.requests`, labelled by route
    template, method and status (WebSockets are not timed)."""

    def __init__(self, app: Any, metrics: Metrics, routes: Sequence[Any]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = _route(self.routes, scope)
        status = 500
        started = time.perf_counter()

        async def sending(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self.metrics.requests.labels(route, scope["method"], str(status)).observe(
                time.perf_counter() - started
            )


class _Quiet(WSGIRequestHandler):
    timeout = SCRAPE_TIMEOUT  # a connection that sends nothing does not hold its thread

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _guarded(app: Callable[..., Any], token: str | None) -> Callable[..., Any]:
    """`app`, answering 401 unless the request gives `token` (Authorization: Bearer, or
    ?token=) when there is one."""

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if token is not None:
            bearer = environ.get("HTTP_AUTHORIZATION", "").removeprefix("Bearer ").strip()
            given = bearer or (parse_qs(environ.get("QUERY_STRING", "")).get("token") or [""])[0]
            if not hmac.compare_digest(given.encode(), token.encode()):
                start_response("401 Unauthorized", [("Content-Type", "text/plain")])
                return [b"this endpoint needs a token\n"]
        result: Iterable[bytes] = app(environ, start_response)
        return result

    return guarded


class MetricsServer:
    """/metrics on a port of its own, served from a thread (`detect --metrics-port`). Binds
    when made, so that a port in use is an error before any model loads."""

    def __init__(self, metrics: Metrics, host: str, port: int, token: str | None) -> None:
        app = _guarded(make_wsgi_app(metrics.registry), token)
        try:
            family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
            server = type("Server", (ThreadingWSGIServer,), {"address_family": family})
            self._server: WSGIServer = make_server(host, port, app, server, handler_class=_Quiet)
        except OSError as exc:
            raise SettingError(
                f"--metrics-port {port}: cannot listen on {host}:{port}: {exc.strerror or exc}"
            ) from exc
        self.port: int = self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="maskwatch-metrics", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
