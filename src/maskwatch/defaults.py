"""Defaults shared by the library and the command line, in a module light enough for the
parser to import (no OpenCV, no NumPy)."""

from maskwatch.labels import INCORRECT, NO_MASK

DETECT_SCORE_THRESHOLD = 0.5
DETECT_MIN_SIDE = 960  # photos smaller than this are also searched upscaled to it
DETECT_MAX_SIDE = 1920  # larger photos are scaled down for detection
DETECT_VIDEO_SIDE = 640  # larger video frames are scaled down for detection (speed)
CROP_MARGIN = 0.15  # around a face box, per side, before squaring and resizing
BLUR_CHOICES = ("none", "no_mask", "all")
RECONNECT_ATTEMPTS = 5  # reopenings of a dropped stream before giving up (0.5 s, doubling)
SETTLE_FRAMES = 5  # frames a track's smoothed label must hold before it settles
ALERT_LABELS = (NO_MASK, INCORRECT)
ALERT_TRACK_INTERVAL = 300.0  # seconds between alerts for one person
ALERT_GLOBAL_INTERVAL = 10.0  # seconds between any two alerts
STATS_PERIODS = ("minute", "hour", "day")
MAX_IMAGE_PIXELS = 50_000_000  # decoded pixels allowed per image, checked from its header
MAX_IMAGE_BYTES = 64 * 2**20  # an image file larger than this is refused unread
# `maskwatch serve` (limits and timeouts; see the README's "Serving" section)
SERVE_MAX_UPLOAD_MB = 8.0  # largest request body (one photo and its multipart framing)
SERVE_REQUEST_TIMEOUT = 30.0  # seconds for a request's head, and then its body, to arrive
SERVE_IDLE_TIMEOUT = 5  # seconds a connection may sit idle (uvicorn's timeout_keep_alive)
SERVE_UPLOAD_SLOTS = 1  # uploads decoded and processed at once (~500 MB each at 50 MP)
SERVE_UPLOAD_QUEUE = 16  # uploads waiting for a slot; beyond that 503 with Retry-After
SERVE_SHUTDOWN_TIMEOUT = 5  # seconds open connections get to finish when the server stops
