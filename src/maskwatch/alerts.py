"""Alerts when a `no_mask` (or `incorrect`) label settles: a command or a webhook, rate-limited,
sent on a worker thread so the video never waits, and never fatal when they fail.

`AlertSettings` says what to run and when (the command line's --alert-* options); each watch
makes its own `AlertDispatcher`, an event output, from them."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import queue
import selectors
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit, urlunsplit

from maskwatch import __version__
from maskwatch.deadline import Deadline, failure_reason, opener
from maskwatch.defaults import ALERT_GLOBAL_INTERVAL, ALERT_LABELS, ALERT_TRACK_INTERVAL
from maskwatch.errors import MaskwatchError
from maskwatch.events import Event
from maskwatch.labels import canonical_label
from maskwatch.redact import URL_HINT
from maskwatch.types import CHANGE, SETTLE

log = logging.getLogger("maskwatch")

ALERT_TIMEOUT = 10.0  # seconds for a whole alert: a command's run, a webhook's call
ALERT_QUEUE = 64
ALERT_STDERR_BYTES = 4096  # of a command's stderr, the last ones, kept for its failure
ALERT_DETAIL_CHARS = 200  # of what a command or server said, shown in a failure
ALERT_STDERR_GRACE = 0.5  # seconds stderr may stay open after the command exits (a child of it)

AlertHandler = Callable[[Event], None]


class AlertFailed(MaskwatchError):
    """One alert could not be delivered (logged by the dispatcher, never fatal)."""


@dataclass
class AlertPolicy:
    """Which events alert, and how often: a person at most once per `track_interval` seconds,
    everyone together at most once per `global_interval` seconds (both on the events' clock)."""

    labels: tuple[str, ...] = ALERT_LABELS
    track_interval: float = ALERT_TRACK_INTERVAL
    global_interval: float = ALERT_GLOBAL_INTERVAL
    _last_global: float | None = None
    _last_track: dict[tuple[str, int], float] = field(default_factory=dict)

    def wants(self, event: Event) -> bool:
        return event.kind in (SETTLE, CHANGE) and event.label in self.labels

    def allow(self, event: Event) -> bool:
        """Whether `event` may alert now; records it when it may."""
        key = (event.source, event.track)
        last = self._last_track.get(key)
        if last is not None and event.time - last < self.track_interval:
            return False
        if self._last_global is not None and event.time - self._last_global < self.global_interval:
            return False
        self._last_track[key] = self._last_global = event.time
        return True


class CommandAlert:
    """Runs a command (no shell) per alert: the event as JSON on stdin and in MASKWATCH_EVENT,
    its label, track and source in MASKWATCH_LABEL, MASKWATCH_TRACK, MASKWATCH_SOURCE. The
    command runs in a session of its own, so that a timeout ends it with all it started, and
    only the last ALERT_STDERR_BYTES of its stderr are kept (for the failure's message)."""

    def __init__(self, command: str, timeout: float = ALERT_TIMEOUT) -> None:
        try:
            self.argv = shlex.split(command)
        except ValueError as exc:
            raise MaskwatchError(f"--alert-cmd {command!r}: {exc}") from exc
        if not self.argv or shutil.which(self.argv[0]) is None:
            raise MaskwatchError(f"--alert-cmd {command!r}: no such program")
        self.timeout = timeout

    def __call__(self, event: Event) -> None:
        payload = json.dumps(event.to_dict())
        env = dict(
            os.environ,
            MASKWATCH_EVENT=payload,
            MASKWATCH_LABEL=event.label or "",
            MASKWATCH_TRACK=str(event.track),
            MASKWATCH_SOURCE=event.source,
        )
        deadline = time.monotonic() + self.timeout
        try:
            # stdin from a file: a command that never reads it cannot block the write
            with tempfile.TemporaryFile() as stdin:
                stdin.write(payload.encode())
                stdin.seek(0)
                process = subprocess.Popen(
                    self.argv,
                    stdin=stdin,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    env=env,
                    start_new_session=True,
                )
        except OSError as exc:
            raise AlertFailed(f"alert command {self.argv[0]}: {exc}") from exc
        with process:
            outcome = None
            try:
                outcome = _finish(process, deadline)
            finally:
                if outcome is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)  # its session's group: pgid == pid
        if outcome is None:
            raise AlertFailed(f"alert command {self.argv[0]} timed out after {self.timeout:g} s")
        returncode, stderr_tail = outcome
        if returncode != 0:
            detail = stderr_tail.decode(errors="replace").strip().splitlines()
            raise AlertFailed(
                f"alert command {self.argv[0]} exited with {returncode}"
                + (f": {detail[-1][-ALERT_DETAIL_CHARS:]}" if detail else "")
            )


def _finish(process: subprocess.Popen[bytes], deadline: float) -> tuple[int, bytes] | None:
    """The exit status and the last ALERT_STDERR_BYTES of stderr of `process` once it is done
    and its stderr closed, or None if `deadline` comes first. A child it left running in the
    background with its stderr gets ALERT_STDERR_GRACE after the command's exit, not more."""
    assert process.stderr is not None
    tail = b""
    exited_at = None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stderr, selectors.EVENT_READ)
        while True:
            now = time.monotonic()
            if exited_at is None and process.poll() is not None:
                exited_at = now
            end = deadline if exited_at is None else min(deadline, exited_at + ALERT_STDERR_GRACE)
            if now >= end:
                if exited_at is None:
                    return None
                break  # it exited: what still holds its stderr is not waited for
            if not selector.select(min(end - now, 0.1)):  # 0.1 s: a look at whether it exited
                continue
            chunk = os.read(process.stderr.fileno(), 65536)
            if not chunk:
                break
            tail = (tail + chunk)[-ALERT_STDERR_BYTES:]
    try:
        return process.wait(max(deadline - time.monotonic(), 0)), tail
    except subprocess.TimeoutExpired:
        return None


class WebhookAlert:
    """POSTs the event as JSON to an http(s) URL, with HTTP Basic auth from the URL's
    user:password@ (taken out of the URL, so never shown). The whole call has one deadline and
    only the answer's status is read, never its body."""

    def __init__(self, url: str, timeout: float = ALERT_TIMEOUT) -> None:
        try:  # ValueError's text may quote a piece of the password: not shown
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise MaskwatchError(f"--alert-webhook {url!r}: {URL_HINT}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname or port == 0:
            raise MaskwatchError(f"--alert-webhook {url!r}: needs an http:// or https:// URL")
        self.url = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
        self.authorization = None
        if parts.username is not None:
            user_password = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            self.authorization = "Basic " + base64.b64encode(user_password.encode()).decode()
        self.timeout = timeout

    def __call__(self, event: Event) -> None:
        import http.client  # here: urllib.request costs 25 ms at start-up, and few use webhooks
        import urllib.error
        import urllib.request

        headers = {"Content-Type": "application/json", "User-Agent": f"maskwatch/{__version__}"}
        if self.authorization:
            headers["Authorization"] = self.authorization
        request = urllib.request.Request(
            self.url, data=json.dumps(event.to_dict()).encode(), headers=headers, method="POST"
        )
        with Deadline(self.timeout) as deadline:
            try:
                with opener(deadline, follow_redirects=False).open(request, timeout=self.timeout):
                    pass  # the status is all an alert needs: the body is never read
            except urllib.error.HTTPError as exc:
                location = exc.headers.get("Location", "") if 300 <= exc.code < 400 else ""
                moved = f" (a redirect to {location[:ALERT_DETAIL_CHARS]}, not followed)"
                exc.close()
                raise AlertFailed(
                    f"webhook {self.url}: {failure_reason(exc)}" + (moved if location else "")
                ) from exc
            except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
                if deadline.passed:
                    raise AlertFailed(
                        f"webhook {self.url}: no answer within {self.timeout:g} s"
                    ) from exc
                raise AlertFailed(f"webhook {self.url}: {failure_reason(exc)}") from exc


@dataclass
class AlertCounts:
    sent: int = 0
    failed: int = 0
    limited: int = 0  # held back by the rate limits
    dropped: int = 0  # the queue was full

    def describe(self) -> str:
        return (
            f"alerts: {self.sent} sent, {self.failed} failed, {self.limited} held back by the "
            f"rate limits, {self.dropped} dropped"
        )


class AlertDispatcher:
    """Takes events on the video thread (`offer` never blocks) and runs the handlers on a
    worker thread. A handler that fails is logged and the next alert still goes out."""

    def __init__(
        self,
        handlers: list[AlertHandler],
        policy: AlertPolicy | None = None,
        queue_size: int = ALERT_QUEUE,
    ) -> None:
        self.handlers = handlers
        self.policy = policy or AlertPolicy()
        self.counts = AlertCounts()
        self._queue: queue.Queue[Event | None] = queue.Queue(maxsize=queue_size)
        self._worker = threading.Thread(target=self._run, name="maskwatch-alerts", daemon=True)
        self._worker.start()

    def write(self, events: Sequence[Event], image: object = None) -> None:
        """The event-output side: offer each event (the image is not sent)."""
        for event in events:
            self.offer(event)

    def offer(self, event: Event) -> bool:
        """Queue an alert for `event` if it is one that alerts and the limits allow it."""
        if not self.policy.wants(event):
            return False
        if not self.policy.allow(event):
            self.counts.limited += 1
            return False
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.counts.dropped += 1
            log.warning("alert for track %d dropped: alerts are not keeping up", event.track)
            return False
        return True

    def _run(self) -> None:
        while (event := self._queue.get()) is not None:
            for handler in self.handlers:
                try:
                    handler(event)
                    self.counts.sent += 1
                except Exception as exc:  # a failing alert must never stop the video
                    self.counts.failed += 1
                    log.warning("alert failed: %s", exc)
            self._queue.task_done()

    def close(self, wait: float = ALERT_TIMEOUT) -> None:
        """Send what is queued (waiting at most `wait` seconds), then stop the worker."""
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=wait)
        self._worker.join(wait)
        if self._worker.is_alive():
            log.warning("%d alerts still queued were not sent", self._queue.qsize())


def parse_labels(text: str) -> tuple[str, ...]:
    """'no_mask,incorrect' (dataset names too) as canonical labels; MaskwatchError naming an
    unknown one."""
    labels = []
    for name in text.split(","):
        label = canonical_label(name)
        if label is None:
            raise MaskwatchError(f"--alert-labels: unknown label {name!r}")
        labels.append(label)
    return tuple(labels)


@dataclass(frozen=True)
class AlertSettings:
    """Where alerts go and how often; checked when made, so that a bad command or URL is one
    clear error before any frame is read."""

    command: str | None = None
    webhook: str | None = None
    labels: tuple[str, ...] = ALERT_LABELS
    track_interval: float = ALERT_TRACK_INTERVAL
    global_interval: float = ALERT_GLOBAL_INTERVAL

    def __post_init__(self) -> None:
        self.handlers()

    def handlers(self) -> list[AlertHandler]:
        handlers: list[AlertHandler] = []
        if self.command:
            handlers.append(CommandAlert(self.command))
        if self.webhook:
            handlers.append(WebhookAlert(self.webhook))
        return handlers

    def dispatcher(self) -> AlertDispatcher | None:
        """A new dispatcher (its own worker and rate limits), or None when nothing alerts."""
        handlers = self.handlers()
        if not handlers:
            return None
        policy = AlertPolicy(self.labels, self.track_interval, self.global_interval)
        return AlertDispatcher(handlers, policy)
