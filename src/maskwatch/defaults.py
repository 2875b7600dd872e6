"""Defaults and allowed ranges shared by the library and the command line, in a module light
enough for the parser to import (no OpenCV, no NumPy)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from numbers import Integral, Real

from maskwatch.errors import SettingError
from maskwatch.labels import INCORRECT, NO_MASK


class Blur(StrEnum):
    """Which faces annotated output pixelates (`--blur`)."""

    NONE = "none"
    NO_MASK = "no_mask"  # every face not labelled mask: uncertain ones too, to err on the safe side
    ALL = "all"


BLUR_CHOICES = tuple(str(b) for b in Blur)  # plain strings, as argparse shows and checks them
DETECT_SCORE_THRESHOLD = 0.5
DETECT_MIN_SIDE = 960  # photos smaller than this are also searched upscaled to it
DETECT_MAX_SIDE = 1920  # larger photos are scaled down for detection
DETECT_VIDEO_SIDE = 640  # larger video frames are scaled down for detection (speed)
DETECT_WORKERS = 2  # detectors taking successive frames of one stream at once (cores allowing)
# Frames of a file (not played in real time) read and detected ahead of the one being classified,
# so the detectors keep busy while a batch is classified; a live source's are read only when due.
READ_AHEAD = 4
CROP_MARGIN = 0.15  # around a face box, per side, before squaring and resizing
SUBJECT_PAD = 0.25  # `classify` searches a photo inside a border this share of its size per side
# Framings a classifier is judged on (margin per side): the face box alone, cut at forehead and
# chin; the detector's framing; and that window 40% larger (1.3 x 1.4 = 1 + 2 x 0.41).
TIGHT_MARGIN = 0.0
LOOSE_MARGIN = 0.41
FRAMING_OFFSET = 0.1  # training framing jitter: centre moved up to this share of the box side
TRUSTED_FACE_SIDE = 48  # px: from this size on, few faces may be left `uncertain`
DEFAULT_INPUT_SIZE = 224  # classifier input side in pixels (a model's metadata may differ)
RECONNECT_ATTEMPTS = 5  # reopenings of a dropped stream before giving up (0.5 s, doubling)
# How long opening a stream may take (OpenCV waits 30 s, holding a lock that every other
# camera's opening waits on: a camera that accepts and never answers stalled them all).
STREAM_OPEN_TIMEOUT_S = 10.0
STREAM_READ_TIMEOUT_S = 10.0  # a stream silent this long has dropped (OpenCV waits 30 s)
SETTLE_FRAMES = 5  # frames a track's smoothed label must hold before it settles
# A person whose label has settled is classified again every this many frames of theirs, or
# sooner when their box moves or grows (below); frames between carry their probabilities.
# Chosen on the labelled tracking scenes (README, Benchmarks): 10 kept every event and 99.8% of
# the settled labels of every-frame classification, and classified a fifth as many faces.
CLASSIFY_EVERY = 10
RECLASSIFY_IOU = 0.6  # a box overlapping its last classified box less than this is classified
RECLASSIFY_SIZE = 1.2  # ... and one whose long side grew or shrank by more than this factor
ALERT_LABELS = (NO_MASK, INCORRECT)
ALERT_TRACK_INTERVAL = 300.0  # seconds between alerts for one person
ALERT_GLOBAL_INTERVAL = 10.0  # seconds between any two alerts
STATS_PERIODS = ("minute", "hour", "day")
STATS_PLOT_BARS = 200  # periods a `stats --plot` chart shows at most (the most recent)
STATS_MAX_PERIODS = 100_000  # the most periods a timeline may ask for (of days: 273 years)
MAX_IMAGE_PIXELS = 50_000_000  # decoded pixels allowed per image, checked from its header
MAX_IMAGE_BYTES = 64 * 2**20  # an image file larger than this is refused unread
MAX_SETTINGS_BYTES = 16 * 2**20  # a training config, model metadata or groups.csv larger: unread
MAX_IMAGE_MEGAPIXELS = MAX_IMAGE_PIXELS / 1e6  # the same budget as --max-pixels shows it
DOWNLOAD_START_S = 60.0  # a download's whole deadline: this, plus its size at the rate below
DOWNLOAD_MIN_RATE = 50_000  # bytes/s: a mirror or server slower than this is given up
DISCOVERY_PREFIX = "homeassistant"  # Home Assistant's MQTT discovery prefix (its default)


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


@dataclass(frozen=True)
class Range:
    """The values a setting may take: from `low` to `high`, either end excluded when open.
    The command line's option types and the library's constructors check the same ranges."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def describe(self) -> str:
        """'from 64 to 1920', 'more than 0 and at most 1', 'at least 0' ..."""
        low, high = self.low, self.high
        if low is not None and high is not None and not (self.low_open or self.high_open):
            return f"from {_number(low)} to {_number(high)}"
        parts = []
        if low is not None:
            parts.append(f"{'more than' if self.low_open else 'at least'} {_number(low)}")
        if high is not None:
            parts.append(f"{'less than' if self.high_open else 'at most'} {_number(high)}")
        return " and ".join(parts) or "a finite number"

    def check(self, name: str, value: object, whole: bool = False) -> None:
        """Raise SettingError (a ValueError) unless `value` is a number (a whole one when
        `whole`; never a bool) in the range: for values read from files as well as arguments."""
        kind = Integral if whole else Real
        if isinstance(value, bool) or not isinstance(value, kind):
            noun = "a whole number" if whole else "a number"
            raise SettingError(f"{name} must be {noun}, not {value!r}")
        try:
            inside = float(value) in self
        except OverflowError:  # an integer beyond any float
            inside = False
        if not inside:
            raise SettingError(f"{name} must be {self.describe()}, not {value!r}")


SCORE_THRESHOLD_RANGE = Range(0, 1, low_open=True)
# 0: never upscale. Upscaling to 4096 px takes about 0.7 GB for a 660x281 photo (YuNet measured),
# 8192 took 2.5 GB, so larger values are refused.
DETECT_MIN_SIDE_RANGE = Range(0, 4096)
DETECT_SIDE_RANGE = Range(64, 4096)  # detection sizes for large photos and video frames
SETTLE_FRAMES_RANGE = Range(1, 1000)
CLASSIFY_EVERY_RANGE = Range(1, 1000)  # 1: every face of every frame
RECONNECT_RANGE = Range(0, 1000)
MAX_FPS_RANGE = Range(0, 1000, low_open=True)
# A video's declared frame rate outside this is not believed (a crafted header can declare 1e-6,
# a frame every 11.6 days, or 1e9): the video is read as one of unknown rate.
VIDEO_FPS_RANGE = Range(0.5, 1000)
DEFAULT_VIDEO_FPS = 25.0  # frames/s of a recording, and the timing of frames, when it is unknown
VIDEO_MAX_PAUSE = 3600.0  # s between two frames of a file: a longer jump is a bad timestamp
ALERT_INTERVAL_RANGE = Range(0, 7 * 86400)  # seconds, up to a week
PORT_RANGE = Range(1, 65535)  # serve --port, detect --metrics-port
# Pillow refuses outright anything over twice its MAX_IMAGE_PIXELS (179 megapixels).
MAX_IMAGE_MEGAPIXELS_RANGE = Range(0.01, 150)

# `maskwatch serve` (limits and timeouts; see the README's "Serving" section)
LOOPBACK_HOST = "127.0.0.1"  # where serve and detect --metrics-port listen unless told
SERVE_PORT = 8000
SERVE_MAX_UPLOAD_MB = 8.0  # largest request body (one photo and its multipart framing)
SERVE_REQUEST_TIMEOUT = 30.0  # seconds for a request's head, and then its body, to arrive
SERVE_IDLE_TIMEOUT = 5  # seconds a connection may sit idle (uvicorn's timeout_keep_alive)
SERVE_MAX_UPLOADS = 8  # uploads in the server at once; beyond that 503 with Retry-After
SERVE_DETECTORS = 2  # face detectors every stream shares, taking turns (one per core here)
SERVE_MAX_BATCH = 64  # face crops the shared classifier runs in one batch at most
SERVE_SHUTDOWN_TIMEOUT = 5  # seconds open connections get to finish when the server stops
SERVE_MAX_SESSIONS = 8  # browser WebSocket sessions at once; more are refused (1013) until one ends
SERVE_SESSION_IDLE_TIMEOUT = 60.0  # seconds a WebSocket session may go without a frame
SERVE_UPLOAD_MB_RANGE = Range(0.01, 1024)
SERVE_REQUEST_TIMEOUT_RANGE = Range(0.1, 3600)
SERVE_IDLE_TIMEOUT_RANGE = Range(1, 3600)
SERVE_SESSIONS_RANGE = Range(1, 1000)
SERVE_SESSION_IDLE_RANGE = Range(1, 86400)
SERVE_UPLOADS_RANGE = Range(1, 1000)
SERVE_DETECTORS_RANGE = Range(1, 64)
SERVE_MAX_CAMERAS = 256  # cameras the dashboard keeps; beyond, the least recently seen is forgotten
SERVE_MJPEG_READERS = 16  # MJPEG streams of one camera at once; beyond, 503 with Retry-After
SERVE_MJPEG_POLL = 0.05  # seconds between an MJPEG stream's looks for a new frame
IN_VIEW_MAX = 1_000  # people one camera keeps in view; beyond, the longest in view is dropped

# Events written to PostgreSQL (--events postgresql://...) while the database may be away
EVENTS_QUEUE = 10_000  # events kept while it is away; beyond, the oldest are dropped (warned)
EVENTS_RETRY_MAX = 30.0  # seconds between reconnection attempts, at most (from 0.5, doubling)
EVENTS_CLOSE_WAIT = 10.0  # seconds the end of a run waits for queued events to be written

# Training (maskwatch train / export; the same ranges check a --config file).
FRACTION = Range(0, 1, low_open=True, high_open=True)
VAL_FRACTION_RANGE = Range(0, 1, high_open=True)
EPOCHS_RANGE = Range(1, 10_000)
FINETUNE_EPOCHS_RANGE = Range(0, 10_000)
PATIENCE_RANGE = Range(0, 10_000)
LEARNING_RATE_RANGE = Range(0, 1, low_open=True)
VIEWS_RANGE = Range(1, 64)
SEED_RANGE = Range(0, 2**32 - 1)
BATCH_RANGE = Range(1, 4096)
INPUT_SIZE_RANGE = Range(32, 1024)
LIMIT_RANGE = Range(1, 10**9)
CALIBRATION_RANGE = Range(1, 100_000)

# A classifier's metadata (the .json beside its .onnx): normalisation on pixels scaled to 0-1.
CROP_MARGIN_RANGE = Range(0, 1)  # per side, a share of the face box's side
MEAN_RANGE = Range(0, 1)
STD_RANGE = Range(0.01, 1)  # smaller would blow pixels up past what float32 holds
UNCERTAIN_BELOW_RANGE = Range(0, 1)
# Far beyond calibration's search (0.2-5) either way; smaller would turn probabilities to NaN.
TEMPERATURE_RANGE = Range(0.01, 100)
