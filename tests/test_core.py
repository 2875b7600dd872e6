"""Labels, the result objects, preprocessing and the verifying cache."""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from conftest import MIRROR, run_cli
from maskwatch import defaults, hub
from maskwatch.classifier import ModelMetadata, labels_for, to_input_tensor
from maskwatch.errors import DownloadError
from maskwatch.labels import canonical_label
from maskwatch.types import Faces, Frame, FrameResult


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("with_mask", "mask"),
        ("without_mask", "no_mask"),
        ("mask_weared_incorrect", "incorrect"),
        ("with_incorrect_mask", "incorrect"),
        ("With_Mask", "mask"),
        ("no_mask", "no_mask"),
        ("helmet", None),
    ],
)
def test_dataset_names_map_to_canonical_labels(name: str, expected: str | None) -> None:
    assert canonical_label(name) == expected


@pytest.mark.parametrize(
    ("boxes", "scores", "landmarks", "error"),
    [
        (np.zeros((2, 4)), np.zeros(2), np.zeros((2, 5, 2)), None),
        (np.zeros((2, 4)), np.zeros(3), np.zeros((2, 5, 2)), ValueError),
        (np.zeros((2, 3)), np.zeros(2), np.zeros((2, 5, 2)), ValueError),
        (np.zeros((1, 4)), np.zeros(1), np.zeros((1, 4, 2)), ValueError),
    ],
)
def test_faces_checks_shapes(boxes, scores, landmarks, error) -> None:  # type: ignore[no-untyped-def]
    if error is None:
        assert len(Faces.from_detections(boxes, scores, landmarks)) == 2
    else:
        with pytest.raises(error):
            Faces(
                boxes=boxes.astype(np.float32),
                scores=scores.astype(np.float32),
                landmarks=landmarks.astype(np.float32),
                tracks=np.zeros(len(boxes), np.int64),
            )


def test_frame_result_json_has_the_documented_fields() -> None:
    faces = Faces.from_detections(
        np.array([[10, 20, 50, 70]]), np.array([0.9]), np.zeros((1, 5, 2))
    )
    faces = faces.with_probs(np.array([[0.7, 0.2, 0.1]]), ("mask", "no_mask", "incorrect"))
    faces = faces.with_labels(("mask",), (True,))
    frame = Frame(image=np.zeros((100, 200, 3), np.uint8), index=3, time=0.2, source="a.jpg")
    data = json.loads(json.dumps(FrameResult(frame, faces).to_dict()))
    assert data == {
        "source": "a.jpg",
        "frame": 3,
        "time": 0.2,
        "width": 200,
        "height": 100,
        "faces": [
            {
                "box": [10.0, 20.0, 50.0, 70.0],
                "score": 0.9,
                "label": "mask",
                "confidence": 0.7,
                "probs": {"mask": 0.7, "no_mask": 0.2, "incorrect": 0.1},
                "track": None,
                "settled": True,
                "classified": True,
            }
        ],
    }


def test_preprocessing_feeds_rgb_not_bgr() -> None:
    meta = ModelMetadata(classes=["mask", "no_mask"], input_size=32)
    blue_bgr = np.zeros((1, 32, 32, 3), np.uint8)
    blue_bgr[..., 0] = 255
    tensor = to_input_tensor(blue_bgr, meta)
    assert tensor.shape == (1, 3, 32, 32)
    red, blue = tensor[0, 0, 0, 0], tensor[0, 2, 0, 0]
    assert red == pytest.approx(-meta.mean[0] / meta.std[0], rel=1e-5)
    assert blue == pytest.approx((1 - meta.mean[2]) / meta.std[2], rel=1e-5)


def test_low_confidence_is_labelled_uncertain() -> None:
    probs = np.array([[0.9, 0.1], [0.55, 0.45]])
    assert labels_for(probs, ["mask", "no_mask"], 0.6) == ("mask", "uncertain")
    assert labels_for(probs, ["mask", "no_mask"], 0.0) == ("mask", "mask")


def test_fetch_goes_through_the_mirror_and_verifies(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("MASKWATCH_HOME", str(tmp_path / "cache"))
    path = hub.fetch("yunet")
    assert path == tmp_path / "cache" / hub.YUNET.filename
    assert hub.sha256_of(path) == hub.YUNET.sha256
    path.write_bytes(b"corrupted")
    assert hub.sha256_of(hub.fetch("yunet")) == hub.YUNET.sha256


def test_a_file_that_fails_its_checksum_is_never_kept(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    bad_mirror = tmp_path / "mirror"
    bad_mirror.mkdir()
    (bad_mirror / hub.YUNET.filename).write_bytes(bytes(hub.YUNET.size))  # its size, not its bytes
    monkeypatch.setenv("MASKWATCH_MIRROR", bad_mirror.as_uri())
    monkeypatch.setenv("MASKWATCH_HOME", str(tmp_path / "cache"))
    with pytest.raises(DownloadError, match="sha256"):
        hub.fetch("yunet")
    _assert_cache_empty(tmp_path)  # folders made for it go too


def test_a_missing_mirror_file_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("MASKWATCH_MIRROR", (tmp_path / "empty").as_uri())
    monkeypatch.setenv("MASKWATCH_HOME", str(tmp_path / "cache"))
    with pytest.raises(DownloadError, match=hub.YUNET.filename):
        hub.fetch("yunet")


def _mirror_with(folder: Path, make_yunet: object) -> dict[str, str]:
    """A mirror holding the real files but for YuNet's, made by `make_yunet(path)`, and the
    environment of a first run (an empty cache) fetching from it."""
    folder.mkdir()
    for entry in hub.REGISTRY.values():
        if entry is not hub.YUNET:
            (folder / entry.filename).symlink_to(MIRROR / entry.filename)
    make_yunet(folder / hub.YUNET.filename)  # type: ignore[operator]
    home = folder.parent / f"{folder.name}-home"
    return {**os.environ, "MASKWATCH_MIRROR": folder.as_uri(), "MASKWATCH_HOME": str(home)}


def _sparse(size: int) -> object:
    def make(path: Path) -> None:
        with open(path, "wb") as file:
            file.truncate(size)

    return make


@pytest.mark.parametrize(
    ("make_yunet", "reason"),
    [
        (os.mkfifo, "not a regular file"),  # a plain open waited for a writer for ever
        (os.mkdir, "is a folder"),
        (_sparse(3 * 2**30), f"is 3221225472 bytes, expected {hub.YUNET.size}"),  # was read whole
        (_sparse(hub.YUNET.size - 1), f"expected {hub.YUNET.size}"),
    ],
)
def test_a_mirror_file_that_is_not_the_expected_file_is_refused_unread(
    tmp_path: Path, make_yunet: object, reason: str
) -> None:
    env = _mirror_with(tmp_path / "mirror", make_yunet)
    proc = run_cli("models", "--fetch", env=env, timeout=60)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.startswith("yunet "))
    assert "FAILED" in row and hub.YUNET.filename in row and reason in row, proc.stdout
    home = Path(env["MASKWATCH_HOME"])
    assert not (home / hub.YUNET.filename).exists()
    assert not [p for p in home.iterdir() if p.name.startswith(".")]  # no temporary file left
    proc = run_cli("classify", str(MIRROR / hub.SAMPLES[0].filename), env=env, timeout=60)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert reason in proc.stderr.splitlines()[-1], proc.stderr


def test_a_download_stops_once_it_passes_the_expected_size(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Over HTTP the size is only known once read: no more than a byte past it is."""
    import http.server
    import threading

    served: list[int] = []

    class Endless(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            try:
                for _ in range(4096):  # 1 GiB, unless the reader stops
                    self.wfile.write(bytes(2**18))
                    served.append(2**18)
            except OSError:
                pass

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Endless)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("MASKWATCH_MIRROR", f"http://127.0.0.1:{server.server_address[1]}")
        monkeypatch.setenv("MASKWATCH_HOME", str(tmp_path / "cache"))
        with pytest.raises(DownloadError, match=f"larger than the expected {hub.YUNET.size}"):
            hub.fetch("yunet")
    finally:
        server.shutdown()
        server.server_close()
    assert sum(served) < 64 * 2**20
    _assert_cache_empty(tmp_path)


def _serve(answer: object) -> tuple[str, Callable[[], None]]:
    """A local server calling `answer(connection)` for every connection; its URL and its stop."""
    import socketserver
    import threading

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            with contextlib.suppress(OSError):
                answer(self.request)  # type: ignore[operator]

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return f"http://127.0.0.1:{server.server_address[1]}", stop


@contextlib.contextmanager
def _mirror(answer: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """MASKWATCH_MIRROR on a local server calling `answer(connection)`, and an empty cache."""
    url, stop = _serve(answer)
    monkeypatch.setenv("MASKWATCH_MIRROR", url)
    monkeypatch.setenv("MASKWATCH_HOME", str(tmp_path / "cache"))
    try:
        yield
    finally:
        stop()


def _fetch_failure(answer: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The one-line DownloadError of fetching YuNet from a mirror answering with `answer`; the
    cache is left empty."""
    with _mirror(answer, tmp_path, monkeypatch), pytest.raises(DownloadError) as raised:
        hub.fetch("yunet")
    message = str(raised.value)
    assert "\n" not in message
    _assert_cache_empty(tmp_path)
    return message


def _assert_cache_empty(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    assert not cache.exists() or not any(cache.iterdir())


def _fetch_in_time(name: str, seconds: float) -> BaseException | None:
    """What hub.fetch(name) raised (None if nothing), failing if it runs past `seconds`."""
    import threading

    raised: list[BaseException | None] = []

    def fetch() -> None:
        try:
            hub.fetch(name)
            raised.append(None)
        except BaseException as exc:  # handed to the test
            raised.append(exc)

    worker = threading.Thread(target=fetch, daemon=True)
    worker.start()
    worker.join(seconds)
    assert raised, f"fetch still running after {seconds} s"
    return raised[0]


@pytest.mark.parametrize("length", [f"Content-Length: {hub.YUNET.size}\r\n", ""])
def test_a_dribbling_mirror_is_given_up(tmp_path: Path, monkeypatch, length: str) -> None:  # type: ignore[no-untyped-def]
    """A correct Content-Length (or none), then a byte every 0.05 s: each read is quick, the
    whole would take 3 hours."""
    import threading

    stopped = threading.Event()

    def dribble(connection: socket.socket) -> None:
        connection.recv(65536)
        connection.sendall(f"HTTP/1.0 200 OK\r\n{length}\r\n".encode())
        while not stopped.wait(0.05):
            connection.sendall(b"x")

    monkeypatch.setattr(defaults, "DOWNLOAD_START_S", 1.0)
    monkeypatch.setattr(defaults, "DOWNLOAD_MIN_RATE", hub.YUNET.size)
    with _mirror(dribble, tmp_path, monkeypatch):
        try:
            raised = _fetch_in_time("yunet", 30)
        finally:
            stopped.set()
    assert isinstance(raised, DownloadError), raised
    message = str(raised)
    assert "\n" not in message and message.endswith("no complete answer within 2 s")
    _assert_cache_empty(tmp_path)


def test_a_mirror_answering_something_not_http_is_one_line(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def hello(connection: socket.socket) -> None:
        connection.recv(65536)
        connection.sendall(b"hello there\r\n\r\n")

    message = _fetch_failure(hello, tmp_path, monkeypatch)
    assert "not a valid HTTP answer" in message and "hello there" in message


def test_a_download_follows_the_mirrors_redirect(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """GitHub and download.pytorch.org answer with redirects; webhooks never follow them."""
    content = (MIRROR / hub.YUNET.filename).read_bytes()

    def moved(connection: socket.socket) -> None:
        request = connection.recv(65536)
        if request.startswith(b"GET /files/"):
            head = f"HTTP/1.0 200 OK\r\nContent-Length: {len(content)}\r\n\r\n".encode()
            connection.sendall(head + content)
        else:
            connection.sendall(b"HTTP/1.0 302 Found\r\nLocation: /files/yunet\r\n\r\n")

    with _mirror(moved, tmp_path, monkeypatch):
        assert hub.sha256_of(hub.fetch("yunet")) == hub.YUNET.sha256


def test_a_mirror_redirecting_in_a_loop_is_one_line(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """urllib's message for a redirect loop runs over three lines, which split the table of
    `models --fetch` and the error line."""

    def loop(connection: socket.socket) -> None:
        connection.recv(65536)
        connection.sendall(b"HTTP/1.0 302 Found\r\nLocation: /again\r\n\r\n")

    assert "HTTP 302" in _fetch_failure(loop, tmp_path, monkeypatch)


def test_backbone_is_torchvisions_mobilenet_v2_with_its_imagenet_weights() -> None:
    """The backbone defined in maskwatch loads torchvision's checkpoint and computes what
    torchvision's MobileNetV2 computes (values recorded with torchvision 0.29.1)."""
    import torch

    from maskwatch.train.model import load_backbone

    net = load_backbone()
    image = torch.linspace(-2, 2, 3 * 224 * 224).reshape(1, 3, 224, 224)
    with torch.no_grad():
        pooled = net(image).mean(dim=(2, 3))[0]
    assert pooled.shape == (1280,)
    expected = [0.0, 0.17538, 0.0, 0.102, 0.0033, 0.06435]
    assert pooled[:6].tolist() == pytest.approx(expected, abs=2e-4)
    assert float(pooled.norm()) == pytest.approx(9.59024, rel=1e-4)
    assert float(pooled.sum()) == pytest.approx(148.7488, rel=1e-4)
    assert not any(p.requires_grad for p in net.parameters())


def test_cache_dir_follows_environment(monkeypatch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("MASKWATCH_HOME", str(tmp_path / "x"))
    assert hub.cache_dir() == tmp_path / "x"
    monkeypatch.delenv("MASKWATCH_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub.cache_dir() == tmp_path / "xdg" / "maskwatch"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert hub.cache_dir() == tmp_path / "home" / ".cache" / "maskwatch"
