"""A labelled tracking test set, rendered at run time, and the standard MOT metrics on it.

People are face cut-outs of real photos (the single-person photos of ../shared/datasets/kary)
composited on a plain background along scripted paths, so every frame has ground-truth
identities and boxes. Scenes: people crossing paths, people hidden behind a pillar for a moment,
people leaving view and coming back within 2 s, and a real-camera-like case (position and size
jitter, JPEG, detections missed at random, and the tracker seeing only every 2nd-3rd frame, as
the browser page sends one frame at a time and drops the rest). The real YuNet finds the faces;
its detections are cached per scene for the process.

Used by tests/test_tracking_metrics.py (targets for the adopted tracker, and classifying people
rather than frames against classifying every face of every frame) and
benchmarks/bench_tracking.py (the comparison with other trackers, and the choice of
--classify-every).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from maskwatch.faces import YuNetDetector
from maskwatch.pipeline import Pipeline
from maskwatch.types import NO_TRACK, Faces, Frame

SHARED = Path(os.environ.get("MASKWATCH_SHARED", Path(__file__).resolve().parents[2] / "shared"))
KARY = SHARED / "datasets" / "kary"
SIZE = (640, 480)
FPS = 15
VISIBLE = 0.5  # a person counts as in view when this much of their face box shows
PARTLY = 0.1  # between PARTLY and VISIBLE: neither required nor a false positive

Path_ = list[tuple[int, float, float]]  # keyframes: (frame, centre x, centre y), linear between


@dataclass(frozen=True)
class Sprite:
    """One person: a cut-out with a soft elliptical alpha, and their face box inside it."""

    image: np.ndarray
    alpha: np.ndarray  # (h, w) 0..1
    face: np.ndarray  # x1 y1 x2 y2 in sprite pixels


@dataclass(frozen=True)
class Actor:
    person: int  # ground-truth identity
    path: Path_
    face_width: int = 70
    becomes: tuple[int, int] | None = None  # (frame, person): looks like that person from then

    def looks(self, frame: int) -> int:
        """Whose picture shows this person in `frame` (someone who puts a mask on changes)."""
        return self.becomes[1] if self.becomes and frame >= self.becomes[0] else self.person


@dataclass(frozen=True)
class Scene:
    name: str
    frames: int
    actors: tuple[Actor, ...]  # drawn in order: later ones pass in front
    pillars: tuple[tuple[int, int], ...] = ()  # x ranges of full-height occluders
    jitter: float = 0.0  # px of random shake per frame; size jitter is jitter/100
    drop: float = 0.0  # share of detections lost at random
    steps: tuple[int, ...] = (1,)  # frames between the frames the tracker sees (random choice)
    seed: int = 0


@dataclass(frozen=True)
class Truth:
    ids: np.ndarray  # (K,) person ids in view
    boxes: np.ndarray  # (K, 4)
    partly: np.ndarray  # (M, 4) boxes of people only partly in view


def _sway(x: float, y: float, frames: int, dx: float = 6) -> Path_:
    """Someone standing: a slow sway around (x, y)."""
    return [(f, x + (dx if (f // 20) % 2 else -dx), y) for f in range(0, frames + 20, 20)]


SCENES = (
    Scene(
        "cross",
        150,
        (
            Actor(0, [(0, 80, 170), (149, 600, 230)]),
            Actor(1, [(0, 600, 190), (149, 60, 210)], 74),
            Actor(2, [(0, 520, 400), (149, 140, 330)], 64),
            Actor(3, _sway(110, 390, 150), 66),
        ),
    ),
    Scene(
        "occlusion",
        150,
        (
            Actor(0, [(0, 60, 250), (149, 600, 260)]),
            Actor(1, [(0, 590, 120), (149, 70, 110)], 64),
            Actor(2, _sway(520, 380, 150), 72),
        ),
        pillars=((270, 370),),
    ),
    Scene(
        "leave_return",
        150,
        (
            Actor(0, [(0, 380, 200), (40, 680, 200), (50, 680, 200), (100, 430, 220)]),
            Actor(1, [(0, 260, 330), (30, -40, 330), (44, -40, 330), (100, 200, 310)], 66),
            Actor(2, _sway(520, 400, 150), 64),
            Actor(3, [(0, 150, 120), (149, 470, 110)], 62),
        ),
    ),
    Scene(
        "camera",
        240,
        (
            Actor(0, [(0, 70, 170), (239, 600, 200)]),
            Actor(1, [(0, 590, 200), (239, 50, 190)], 72),
            Actor(2, [(0, 380, 390), (56, 700, 390), (62, 700, 390), (120, 420, 380)], 64),
            Actor(3, _sway(120, 380, 240), 68),
            Actor(4, [(0, 330, 80), (239, 480, 110)], 60),
        ),
        pillars=((230, 300),),
        jitter=3.0,
        drop=0.1,
        steps=(2, 3),
        seed=3,
    ),
)


# Someone standing puts a mask on (sprites alternate no mask, mask): the settled label must
# change; kept out of SCENES, whose people keep their looks.
MASK_ON = Scene(
    "mask_on",
    150,
    (
        Actor(6, _sway(200, 220, 150), 72, becomes=(60, 7)),
        Actor(1, _sway(470, 200, 150), 66),
        Actor(2, [(0, 80, 390), (149, 560, 370)], 64),
    ),
)


@functools.cache
def sprites(count: int = 8) -> tuple[Sprite, ...]:
    """`count` people: kary photos (mask and no-mask alternately) where YuNet finds one clear
    face, cut out around it."""
    detector = _detector()
    folders = [sorted((KARY / label).glob("*.jpg")) for label in ("no_mask", "mask")]
    out: list[Sprite] = []
    for pair in zip(*folders, strict=False):
        for path in pair:
            if len(out) < count and (sprite := _cut_out(detector, path)) is not None:
                out.append(sprite)
        if len(out) == count:
            return tuple(out)
    raise RuntimeError(f"only {len(out)} usable people in {KARY}")


def _cut_out(detector: YuNetDetector, path: Path) -> Sprite | None:
    image = cv2.imread(str(path))
    if image is None:
        return None
    faces = detector.detect(image, thorough=True)
    if len(faces) != 1 or faces.scores[0] < 0.85:
        return None
    x1, y1, x2, y2 = faces.boxes[0]
    side = 2.2 * max(x2 - x1, y2 - y1)
    if side < 80:
        return None
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2 + 0.15 * side
    left, top = int(cx - side / 2), int(cy - side / 2)
    pad = int(side)
    padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    crop = padded[top + pad : top + pad + int(side), left + pad : left + pad + int(side)]
    scale = 100 / (x2 - x1)  # face boxes 100 px wide in the sprite; scaled again when drawn
    crop = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    h, w = crop.shape[:2]
    alpha = np.zeros((h, w), np.float32)
    cv2.ellipse(alpha, (w // 2, h // 2), (int(w * 0.42), int(h * 0.48)), 0, 0, 360, 1.0, -1)
    alpha = cv2.GaussianBlur(alpha, (0, 0), w * 0.03)
    face = (np.array([x1, y1, x2, y2], np.float32) - [left, top, left, top]) * scale
    return Sprite(crop, alpha, face)


@functools.cache
def _detector() -> YuNetDetector:
    return YuNetDetector()


def _position(path: Path_, frame: int) -> tuple[float, float]:
    frames = [k[0] for k in path]
    return (
        float(np.interp(frame, frames, [k[1] for k in path])),
        float(np.interp(frame, frames, [k[2] for k in path])),
    )


def _background(rng: np.random.Generator) -> np.ndarray:
    w, h = SIZE
    ramp = np.linspace(70, 150, w, dtype=np.float32)[None, :, None]
    canvas = np.broadcast_to(ramp, (h, w, 3)).astype(np.float32) * [1.0, 0.95, 0.85]
    canvas += rng.normal(0, 4, canvas.shape)
    return np.clip(canvas, 0, 255).astype(np.uint8)


def render(scene: Scene) -> tuple[list[np.ndarray], list[Truth]]:
    """The scene's frames (BGR, SIZE) and what is truly in view in each."""
    rng = np.random.default_rng(scene.seed)
    people = sprites()
    background = _background(rng)
    w, h = SIZE
    frames, truths = [], []
    for f in range(scene.frames):
        canvas = background.astype(np.float32)
        owner = np.full((h, w), -1, np.int32)  # who shows at each pixel
        boxes: dict[int, np.ndarray] = {}
        for actor in scene.actors:
            sprite = people[actor.looks(f)]
            cx, cy = _position(actor.path, f)
            scale = actor.face_width / (sprite.face[2] - sprite.face[0])
            if scene.jitter:
                cx, cy = cx + rng.normal(0, scene.jitter), cy + rng.normal(0, scene.jitter)
                scale *= 1 + rng.normal(0, scene.jitter / 100)
            image = cv2.resize(sprite.image, None, fx=scale, fy=scale)
            alpha = cv2.resize(sprite.alpha, (image.shape[1], image.shape[0]))
            face = sprite.face * scale
            left = round(cx - (face[0] + face[2]) / 2)
            top = round(cy - (face[1] + face[3]) / 2)
            boxes[actor.person] = face + np.array([left, top, left, top], np.float32)
            _paste(canvas, owner, image, alpha, left, top, actor.person)
        for x1, x2 in scene.pillars:
            canvas[:, x1:x2] = (60, 70, 90)
            owner[:, x1:x2] = -1
        frame = np.clip(canvas, 0, 255).astype(np.uint8)
        if scene.jitter:  # a camera's frames arrive as JPEG
            _ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 75])
            frame = cv2.imdecode(data, cv2.IMREAD_COLOR)
        frames.append(frame)
        truths.append(_truth(owner, boxes))
    return frames, truths


def _paste(
    canvas: np.ndarray,
    owner: np.ndarray,
    image: np.ndarray,
    alpha: np.ndarray,
    left: int,
    top: int,
    person: int,
) -> None:
    h, w = owner.shape
    x1, y1 = max(left, 0), max(top, 0)
    x2, y2 = min(left + image.shape[1], w), min(top + image.shape[0], h)
    if x1 >= x2 or y1 >= y2:
        return
    part = (slice(y1 - top, y2 - top), slice(x1 - left, x2 - left))
    a = alpha[part][..., None]
    canvas[y1:y2, x1:x2] = a * image[part] + (1 - a) * canvas[y1:y2, x1:x2]
    owner[y1:y2, x1:x2][alpha[part] > 0.5] = person


def _truth(owner: np.ndarray, boxes: dict[int, np.ndarray]) -> Truth:
    h, w = owner.shape
    ids, shown, partly = [], [], []
    for person, box in boxes.items():
        x1, y1, x2, y2 = box.astype(int)
        area = max((x2 - x1) * (y2 - y1), 1)
        cx1, cy1, cx2, cy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
        seen = (
            int((owner[cy1:cy2, cx1:cx2] == person).sum()) / area if cx1 < cx2 and cy1 < cy2 else 0
        )
        clipped = np.array([cx1, cy1, cx2, cy2], np.float32)
        if seen >= VISIBLE:
            ids.append(person)
            shown.append(clipped)
        elif seen >= PARTLY:
            partly.append(clipped)
    return Truth(
        np.array(ids, np.int64),
        np.array(shown, np.float32).reshape(-1, 4),
        np.array(partly, np.float32).reshape(-1, 4),
    )


@dataclass(frozen=True)
class Sequence:
    """What a tracker sees of a scene: the detections of the frames it is given, and the truth."""

    scene: Scene
    frames: tuple[int, ...]
    faces: tuple[Faces, ...]
    truths: tuple[Truth, ...]

    @property
    def people(self) -> int:
        return len({int(i) for t in self.truths for i in t.ids})


@functools.cache
def sequence(name: str) -> Sequence:
    """Scene `name` rendered, detected by the real YuNet (video mode), thinned the way the
    scene says; cached for the process."""
    scene = next(s for s in (*SCENES, MASK_ON) if s.name == name)
    frames, truths = render(scene)
    rng = np.random.default_rng(scene.seed + 1)
    seen, f = [], 0
    while f < scene.frames:
        seen.append(f)
        f += int(rng.choice(scene.steps))
    detector = _detector()
    faces = []
    for f in seen:
        found = detector.detect(frames[f])
        keep = rng.random(len(found)) >= scene.drop
        faces.append(
            Faces.from_detections(found.boxes[keep], found.scores[keep], found.landmarks[keep])
        )
    return Sequence(scene, tuple(seen), tuple(faces), tuple(truths[f] for f in seen))


# A tracker under test: called once per frame with the detections, returns the boxes it reports
# and their track ids (NO_TRACK for faces not yet counted as a person).
Step = Callable[[Faces], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Score:
    idf1: float
    switches: int
    mota: float
    people: int  # true
    counted: int  # distinct track ids reported
    ms: float  # median milliseconds per update

    @property
    def count_error(self) -> float:
        return abs(self.counted - self.people) / self.people


def evaluate(seq: Sequence, step: Step) -> Score:
    """IDF1, ID switches and MOTA (motmetrics, IoU >= 0.5) and the people count of one run of
    a tracker over `seq`. Reported faces on people only partly in view are ignored."""
    import time

    import motmetrics as mm

    acc = mm.MOTAccumulator(auto_id=True)
    counted: set[int] = set()
    times = []
    for faces, truth in zip(seq.faces, seq.truths, strict=True):
        start = time.perf_counter()
        boxes, ids = step(faces)
        times.append(time.perf_counter() - start)
        keep = ids != NO_TRACK
        boxes, ids = np.asarray(boxes, np.float32)[keep].reshape(-1, 4), ids[keep]
        if len(truth.partly) and len(boxes):
            on_partly = _iou(boxes, truth.partly).max(axis=1) >= 0.3
            unmatched = _iou(boxes, truth.boxes).max(axis=1, initial=0) < 0.5
            boxes, ids = boxes[~(on_partly & unmatched)], ids[~(on_partly & unmatched)]
        counted.update(int(i) for i in ids)
        # 1 - IoU, no match below IoU 0.5: motmetrics' iou_matrix, which its 1.4.0 cannot run
        # on NumPy 2 (np.asfarray)
        distances = 1 - _iou(truth.boxes, boxes)
        distances[distances > 0.5] = np.nan
        acc.update(truth.ids.tolist(), ids.tolist(), distances)
    summary = mm.metrics.create().compute(
        acc, metrics=["idf1", "num_switches", "mota"], name=seq.scene.name
    )
    row = summary.iloc[0]
    return Score(
        float(row["idf1"]),
        int(row["num_switches"]),
        float(row["mota"]),
        seq.people,
        len(counted),
        1000 * float(np.median(times)),
    )


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from maskwatch.tracking import iou_matrix

    return iou_matrix(np.asarray(a, np.float32), np.asarray(b, np.float32))


@dataclass(frozen=True)
class Watched:
    """What a pipeline made of a scene, frame by frame: the events (scene, kind, track,
    label, previous label) in order, each seen frame's settled label per person, each face's label,
    and how many faces the classifier saw out of how many were found."""

    events: tuple[tuple[str, str, int, str | None, str | None], ...]  # scene first
    settled: tuple[dict[int, str | None], ...]
    labels: tuple[tuple[str, ...], ...]
    classified: int
    faces: int

    def __add__(self, other: Watched) -> Watched:
        """Two scenes' runs as one."""
        return Watched(
            self.events + other.events,
            self.settled + other.settled,
            self.labels + other.labels,
            self.classified + other.classified,
            self.faces + other.faces,
        )


def watch_scene(name: str, *pipelines: Pipeline) -> list[Watched]:
    """Scene `name` through each of `pipelines` (with trackers), from classification on: the
    same frames and YuNet detections as `sequence(name)`, rendered again."""
    seq = sequence(name)
    frames, _ = render(seq.scene)
    return [_watch(seq, frames, pipeline) for pipeline in pipelines]


def _watch(seq: Sequence, frames: list[np.ndarray], pipeline: Pipeline) -> Watched:
    tracker = pipeline.tracker
    assert tracker is not None
    name = seq.scene.name
    events, settled, labels = [], [], []
    classified = found = 0
    for f, faces in zip(seq.frames, seq.faces, strict=True):
        result = pipeline.classify(Frame(frames[f], f, f / FPS, name), faces)
        events += [(name, str(c.kind), c.track, c.label, c.previous) for c in result.changes]
        settled.append({t.id: t.settled for t in tracker.tracks if t.confirmed})
        labels.append(result.faces.labels)
        classified += int(result.faces.classified.sum())
        found += len(result.faces)
    ending = pipeline.finish()
    if ending is not None:
        events += [(name, str(c.kind), c.track, c.label, c.previous) for c in ending.changes]
    return Watched(tuple(events), tuple(settled), tuple(labels), classified, found)


def agreement(a: Watched, b: Watched) -> tuple[float, float, float]:
    """How far two runs of one scene agree: the share of events they have in common (as a
    multiset, over the larger count), of (frame, person) settled labels and of face labels."""
    from collections import Counter

    common = sum((Counter(a.events) & Counter(b.events)).values())
    events = common / max(len(a.events), len(b.events), 1)
    pairs = same = 0
    for x, y in zip(a.settled, b.settled, strict=True):
        for person in x.keys() | y.keys():
            pairs += 1
            same += x.get(person) == y.get(person)
    faces = [
        (p, q) for x, y in zip(a.labels, b.labels, strict=True) for p, q in zip(x, y, strict=True)
    ]
    labels = sum(p == q for p, q in faces) / max(len(faces), 1)
    return events, same / max(pairs, 1), labels
