"""Capacity of `maskwatch serve`: the HTTP API and the WebSocket with 1, 4 and 8 clients at once.

Starts the real server (a subprocess on loopback). The API clients each post the tests'
three-faces photo (660x281) again and again for `--seconds`; printed per level: requests/s (200s
only), p50 and p95 latency, and any 503s. The WebSocket clients each stream a 640x480 frame of the
same faces as the page does, one frame in flight (send, wait for the answer, send again); printed:
answered frames/s in all and of the slowest and fastest client, and the median and p95 round trip.
For the API, also the CPU time the server spent per request and the cores kept busy by server and
clients together: with one client already using more than one core (a request's classification
runs on both), that share bounds how far more clients can scale on this machine.
Each level runs `--repeats` times; the median run is shown. `--before SRC` runs the same levels
against a server importing maskwatch from SRC (e.g. another checkout's src/), side by side: both
servers up at once, taking turns run by run. `--only api` or `--only ws` measures one of the two.

    python benchmarks/bench_serve.py                        # about 1.5 minutes
    python benchmarks/bench_serve.py --before ../main/src --seconds 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import httpx
from websockets.sync.client import connect

from bench_serve_memory import free_port, photo_path, wait_until_up
from machine import describe_machine

LEVELS = (1, 4, 8)
Result = dict[str, dict[int, dict[str, float]]]  # "api" / "ws" -> clients -> figures


@dataclass
class Server:
    base: str
    pid: int


@contextmanager
def server(src: str | None) -> Iterator[Server]:
    """A `maskwatch serve` on a free port (importing maskwatch from `src` when given)."""
    port = free_port()
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = os.pathsep.join([str(Path(src).resolve()), env.get("PYTHONPATH", "")])
    process = subprocess.Popen(
        [sys.executable, "-m", "maskwatch.cli", "serve", "--port", str(port)],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(base, process)
        yield Server(base, process.pid)
    finally:
        process.terminate()
        process.wait(timeout=30)


@dataclass
class Client:
    latencies: list[float] = field(default_factory=list)
    refused: int = 0


def run_clients(
    clients: int, seconds: float, work: Callable[[Client, float], None]
) -> list[Client]:
    """`clients` threads each running `work(client, deadline)`, started together."""
    results = [Client() for _ in range(clients)]
    barrier = threading.Barrier(clients)

    def run(client: Client) -> None:
        barrier.wait()
        work(client, time.monotonic() + seconds)

    threads = [threading.Thread(target=run, args=(c,)) for c in results]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def p95(values: list[float]) -> float:
    return sorted(values)[int(0.95 * (len(values) - 1))] if values else float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid`, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def api_level(served: Server, photo: bytes, clients: int, seconds: float) -> dict[str, float]:
    base = served.base

    def work(client: Client, deadline: float) -> None:
        with httpx.Client(base_url=base, timeout=60) as http:
            while time.monotonic() < deadline:
                t0 = time.perf_counter()
                reply = http.post("/api/v1/detect", files={"image": ("door.jpg", photo)})
                if reply.status_code == 200:
                    client.latencies.append(time.perf_counter() - t0)
                else:
                    client.refused += 1
                    time.sleep(float(reply.headers.get("retry-after", "1")))

    server_before, clients_before = cpu_seconds(served.pid), time.process_time()
    started = time.monotonic()
    results = run_clients(clients, seconds, work)
    elapsed = time.monotonic() - started
    server_cpu = cpu_seconds(served.pid) - server_before
    clients_cpu = time.process_time() - clients_before
    latencies = [x for c in results for x in c.latencies]
    return {
        "rate": len(latencies) / seconds,
        "server_ms": 1000 * server_cpu / max(1, len(latencies)),
        "cores": (server_cpu + clients_cpu) / elapsed,
        "p50": 1000 * statistics.median(latencies),
        "p95": 1000 * p95(latencies),
        "refused": sum(c.refused for c in results),
    }


def ws_level(served: Server, frame: bytes, clients: int, seconds: float) -> dict[str, float]:
    url = served.base.replace("http:", "ws:") + "/ws/detect"

    def work(client: Client, deadline: float) -> None:
        with connect(url, max_size=None) as ws:
            while time.monotonic() < deadline:
                t0 = time.perf_counter()
                ws.send(frame)
                if "error" in json.loads(ws.recv(timeout=60)):
                    client.refused += 1
                else:
                    client.latencies.append(time.perf_counter() - t0)

    results = run_clients(clients, seconds, work)
    rates = [len(c.latencies) / seconds for c in results]
    latencies = [x for c in results for x in c.latencies]
    return {
        "rate": sum(rates),
        "slowest": min(rates),
        "fastest": max(rates),
        "p50": 1000 * statistics.median(latencies),
        "p95": 1000 * p95(latencies),
        "refused": sum(c.refused for c in results),
    }


def median_run(runs: list[dict[str, float]]) -> dict[str, float]:
    """The run of median rate."""
    return sorted(runs, key=lambda r: r["rate"])[len(runs) // 2]


def measure(srcs: dict[str, str | None], args: argparse.Namespace) -> dict[str, Result]:
    """Every level on every server (`srcs`: name -> src/), the servers running side by side and
    taking turns run by run, so that a slow minute of the machine falls on all of them alike."""
    photo = photo_path().read_bytes()
    image = cv2.imread(str(photo_path()))
    if image is None:
        raise SystemExit(f"cannot read {photo_path()}; set MASKWATCH_SHARED")
    frame = cv2.imencode(".jpg", cv2.resize(image, (640, 480)), [cv2.IMWRITE_JPEG_QUALITY, 75])[
        1
    ].tobytes()
    levels = {
        "api": lambda served, clients: api_level(served, photo, clients, args.seconds),
        "ws": lambda served, clients: ws_level(served, frame, clients, args.seconds),
    }
    runs: dict[tuple[str, str, int], list[dict[str, float]]] = {}
    with ExitStack() as stack:
        servers = {name: stack.enter_context(server(src)) for name, src in srcs.items()}
        for served in servers.values():
            api_level(served, photo, 1, 1.0)  # warm up
        for kind, level in levels.items():
            if args.only not in (None, kind):
                continue
            for clients in LEVELS:
                for _ in range(args.repeats):
                    for name, served in servers.items():
                        runs.setdefault((name, kind, clients), []).append(level(served, clients))
    out: dict[str, Result] = {name: {"api": {}, "ws": {}} for name in srcs}
    for (name, kind, clients), results in runs.items():
        out[name][kind][clients] = median_run(results)
    return out


def report(name: str, result: Result) -> None:
    print(f"\n{name}")
    if result["api"]:
        report_api(result["api"])
    if result["ws"]:
        report_ws(result["ws"])


def report_api(api: dict[int, dict[str, float]]) -> None:
    print("| API clients | requests/s | p50 ms | p95 ms | 503s | server CPU ms/request | "
          "cores busy |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for clients, r in api.items():
        print(f"| {clients} | {r['rate']:.1f} | {r['p50']:.0f} | {r['p95']:.0f} | "
              f"{r['refused']:.0f} | {r['server_ms']:.1f} | {r['cores']:.2f} |")  # fmt: skip
    print(f"API with 8 clients: {api[8]['rate'] / api[1]['rate']:.2f}x one client; at most "
          f"{os.cpu_count() / api[1]['cores']:.2f}x on {os.cpu_count()} cores at one "
          "client's CPU per request")  # fmt: skip


def report_ws(ws: dict[int, dict[str, float]]) -> None:
    print("| WebSocket clients | answered fps, all | slowest client | fastest | "
          "round trip p50 ms | p95 ms |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- |")
    for clients, r in ws.items():
        print(f"| {clients} | {r['rate']:.1f} | {r['slowest']:.1f} | {r['fastest']:.1f} | "
              f"{r['p50']:.0f} | {r['p95']:.0f} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="per level and run")
    parser.add_argument("--repeats", type=int, default=1, help="runs per level (median shown)")
    parser.add_argument("--before", default=None, metavar="SRC", help="also measure this src/")
    parser.add_argument(
        "--only", choices=("api", "ws"), help="measure the HTTP API or WebSocket only"
    )
    args = parser.parse_args()
    print(f"machine: {describe_machine()}")
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    srcs = {f"before ({args.before})": args.before} if args.before else {}
    for name, result in measure({**srcs, "this checkout": None}, args).items():
        report(name, result)
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
