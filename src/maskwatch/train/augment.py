"""Data augmentation on face crops (uint8 BGR, square).

`seed_augment` is the seed project's recipe (Keras ImageDataGenerator): rotation +-20 degrees,
width and height shift 0.2, zoom 0.15, horizontal flip, edges filled with the nearest pixel.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from maskwatch.labels import INCORRECT, MASK, NO_MASK
from maskwatch.train.config import Augment

# (crop, label, landmarks, classes, rng) -> (augmented crop, its label)
Augmenter = Callable[
    [np.ndarray, str, np.ndarray, list[str], np.random.Generator], tuple[np.ndarray, str]
]


@dataclass(frozen=True)
class GeometryAugment:
    """Random affine jitter of a crop; ranges as in Keras' ImageDataGenerator."""

    rotation_deg: float = 20.0
    shift: float = 0.2
    zoom: float = 0.15
    flip: bool = True

    def __call__(self, crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        size = crop.shape[0]
        angle = rng.uniform(-self.rotation_deg, self.rotation_deg)
        # Keras zooms by 1/z for z in [1 - zoom, 1 + zoom], separately per axis.
        zx, zy = 1.0 / rng.uniform(1 - self.zoom, 1 + self.zoom, size=2)
        tx, ty = rng.uniform(-self.shift, self.shift, size=2) * size
        centre = size / 2.0
        rot = cv2.getRotationMatrix2D((centre, centre), angle, 1.0)
        scale = np.array([[zx, 0, centre * (1 - zx)], [0, zy, centre * (1 - zy)], [0, 0, 1]])
        matrix = (np.vstack([rot, [0, 0, 1]]) @ scale)[:2]
        matrix[:, 2] += (tx, ty)
        out = cv2.warpAffine(
            crop, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        if self.flip and rng.random() < 0.5:
            out = out[:, ::-1]
        return np.ascontiguousarray(out)


seed_augment = GeometryAugment()


def keep_label(
    transform: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None,
) -> Augmenter:
    """A crop-only transform (None: none) as an Augmenter that never changes the label."""

    def augment(
        crop: np.ndarray,
        label: str,
        landmarks: np.ndarray,
        classes: list[str],
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, str]:
        return (crop if transform is None else transform(crop, rng)), label

    return augment


def _colour_jitter(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast, saturation and hue, each drawn independently."""
    hsv = cv2.cvtColor(crop, cv2.COLOR_BGR2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-10, 10)) % 180
    hsv[..., 1] *= rng.uniform(0.6, 1.4)
    out = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2BGR).astype(np.float32)
    mean = out.mean()
    out = (out - mean) * rng.uniform(0.7, 1.3) + mean * rng.uniform(0.7, 1.3)
    return np.clip(out, 0, 255).astype(np.uint8)


def _degrade(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """What cameras and the web do to faces: blur, sensor noise, JPEG artefacts, low resolution."""
    if rng.random() < 0.2:
        crop = cv2.GaussianBlur(crop, (0, 0), rng.uniform(0.5, 1.8))
    if rng.random() < 0.2:
        size = crop.shape[0]
        small = max(12, int(size * rng.uniform(0.12, 0.4)))
        crop = cv2.resize(
            cv2.resize(crop, (small, small), interpolation=cv2.INTER_AREA),
            (size, size),
            interpolation=cv2.INTER_LINEAR,
        )
    if rng.random() < 0.2:
        noise = rng.normal(0, rng.uniform(3, 12), crop.shape)
        crop = np.clip(crop.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    if rng.random() < 0.3:
        ok, data = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(25, 90))])
        decoded = cv2.imdecode(data, cv2.IMREAD_COLOR) if ok else None
        if decoded is not None:
            crop = decoded
    if rng.random() < 0.05:
        crop = cv2.cvtColor(cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    return crop


def _random_erase(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blank a random rectangle (2-12% of the crop) with noise, like an occluding object."""
    size = crop.shape[0]
    area = rng.uniform(0.02, 0.12) * size * size
    aspect = np.exp(rng.uniform(np.log(0.3), np.log(3.3)))
    h = int(min(size, np.sqrt(area * aspect)))
    w = int(min(size, np.sqrt(area / aspect)))
    y, x = int(rng.integers(0, size - h + 1)), int(rng.integers(0, size - w + 1))
    out = crop.copy()
    out[y : y + h, x : x + w] = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return out


# Where a mask's top edge sits, as a fraction of the way from the eyes (0) to the mouth (1).
PLACEMENTS: dict[str, tuple[float, float]] = {
    "worn": (0.25, 0.5),  # over the bridge of the nose
    "below_nose": (0.75, 0.95),  # nostrils free, mouth covered
    "on_chin": (1.25, 1.5),  # mouth free
}


def _mask_texture(size: int, rng: np.random.Generator) -> np.ndarray:
    """A mask's cloth: a plain colour, stripes, dots or a blotchy print, lightly shaded."""
    base = rng.integers(0, 256, 3).astype(np.float32)
    if rng.random() < 0.35:  # common real masks: white, black, surgical blue/green, grey
        common = [(235, 235, 235), (30, 30, 30), (210, 170, 120), (190, 200, 150), (140, 140, 140)]
        base = np.array(common[int(rng.integers(0, len(common)))], np.float32)
    texture = np.empty((size, size, 3), np.float32)
    texture[:] = base
    kind = rng.integers(0, 4)
    second = rng.integers(0, 256, 3).astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size]
    if kind == 1:
        period = rng.uniform(6, 20)
        texture[np.sin((xx + yy * rng.uniform(-1, 1)) / period * np.pi) > 0.3] = second
    elif kind == 2:
        period = int(rng.integers(8, 22))
        texture[
            ((xx % period) - period / 2) ** 2 + ((yy % period) - period / 2) ** 2
            < (period / 4) ** 2
        ] = second
    elif kind == 3:
        blobs = cv2.GaussianBlur(rng.random((size, size)).astype(np.float32), (0, 0), size / 25)
        texture[blobs > np.median(blobs)] = second
    folds = 1.0 + 0.12 * np.sin(yy / rng.uniform(5, 12))[..., None]
    return np.clip(texture * folds * rng.uniform(0.7, 1.1), 0, 255)


def _face_axes(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """(eyes' midpoint, unit vector across, unit vector down, eye distance, eyes-to-mouth)."""
    eye_r, eye_l, _, mouth_r, mouth_l = landmarks.astype(np.float64)
    eyes = (eye_r + eye_l) / 2
    across = eye_l - eye_r
    width = float(np.linalg.norm(across))
    down = (mouth_r + mouth_l) / 2 - eyes
    height = float(np.linalg.norm(down))
    return eyes, across / max(width, 1e-6), down / max(height, 1e-6), width, height


def _blend(
    crop: np.ndarray, polygon: np.ndarray, colour: np.ndarray, over_padding: bool = False
) -> np.ndarray:
    """`colour` (a picture the crop's size) inside `polygon`, shaded by the crop's light; over
    the black padding of a crop that reaches past its photo too when `over_padding`."""
    size = crop.shape[0]
    outline = np.zeros((size, size), np.float32)
    cv2.fillPoly(outline, [np.round(polygon).astype(np.int32)], 1.0)
    alpha = cv2.GaussianBlur(outline, (0, 0), 1.0)
    if not over_padding:
        alpha = alpha * (crop.max(axis=2) > 0)  # not the black beyond the photo's edge
    shade = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY).astype(np.float32)[..., None] / 255.0
    painted = np.clip(colour * (0.55 + 0.6 * shade), 0, 255)
    alpha = alpha[..., None]
    return (crop.astype(np.float32) * (1 - alpha) + painted * alpha).astype(np.uint8)


def paint_mask(
    crop: np.ndarray, landmarks: np.ndarray, placement: str, rng: np.random.Generator
) -> np.ndarray:
    """Draw a synthetic mask on a face crop from YuNet's five landmarks (crop pixels):
    right eye, left eye, nose tip, right and left mouth corners."""
    eyes, u, v, width, height = _face_axes(landmarks)
    if width < 4:
        return crop
    top_at, bottom = rng.uniform(*PLACEMENTS[placement]), rng.uniform(1.9, 2.3)
    half = width * rng.uniform(1.0, 1.25)
    points = []
    for t in np.linspace(0, np.pi, 14):  # top edge, then a rounded bottom to the chin
        points.append(
            eyes + v * height * top_at + u * half * np.cos(t) + v * height * 0.08 * np.sin(t)
        )
    for t in np.linspace(0, np.pi, 14):
        points.append(
            eyes
            + v * height * (top_at + (bottom - top_at) * np.sin(t) ** 0.6)
            - u * half * np.cos(t) * (0.85 + 0.15 * np.sin(t))
        )
    # over the padding as well, as the `real` recipe's masks always were: its runs reproduce
    return _blend(crop, np.array(points), _mask_texture(crop.shape[0], rng), over_padding=True)


def recolour_lower_face(
    crop: np.ndarray, landmarks: np.ndarray, label: str, rng: np.random.Generator
) -> np.ndarray:
    """Change the colour of the mask (from the bridge of the nose for a worn mask, from below the
    nose for one worn incorrectly), keeping its texture and shading: the same mask in another
    colour, so "light blue" stops meaning "mask"."""
    size = crop.shape[0]
    eyes = landmarks[:2].mean(axis=0)
    nose = landmarks[2]
    mouth = landmarks[3:].mean(axis=0)
    start = nose[1] - 0.3 * (nose[1] - eyes[1]) if label == MASK else (nose[1] + mouth[1]) / 2
    top = int(np.clip(start, 0, size - 1))
    hsv = cv2.cvtColor(crop, cv2.COLOR_BGR2HSV).astype(np.float32)
    region = hsv[top:]
    region[..., 0] = (region[..., 0] + rng.uniform(20, 160)) % 180
    region[..., 1] = np.clip(region[..., 1] * rng.uniform(0.3, 2.0) + rng.uniform(0, 60), 0, 255)
    out = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)
    ramp = np.clip((np.arange(size) - top) / 6.0, 0, 1)[:, None, None]
    return (crop * (1 - ramp) + out * ramp).astype(np.uint8)


def paint_neckwear(crop: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A collar, scarf or shirt below the jaw, the chin left bare: what a bare face in a street
    photo has under it, and what a mask pulled down to the chin must not be confused with."""
    eyes, u, v, width, height = _face_axes(landmarks)
    if width < 4:
        return crop
    top, half, sag = rng.uniform(1.95, 2.35), width * rng.uniform(1.3, 2.6), rng.uniform(-0.3, 0.6)
    edge = [
        eyes + v * height * (top + sag * np.sin(t)) + u * half * np.cos(t)
        for t in np.linspace(0, np.pi, 14)
    ]
    below = [eyes + v * height * 8 - u * half * 1.4, eyes + v * height * 8 + u * half * 1.4]
    return _blend(crop, np.array(edge + below), _mask_texture(crop.shape[0], rng))


def paint_mouth_object(
    crop: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Something at the mouth that is not a mask (a hand, a microphone, food, a glass): skin
    coloured like the cheek, or any colour; never over the nose."""
    eyes, u, v, width, height = _face_axes(landmarks)
    if width < 4:
        return crop
    centre = eyes + v * height * rng.uniform(1.0, 1.35) + u * width * rng.uniform(-0.4, 0.4)
    axes = (width * rng.uniform(0.3, 0.7), height * rng.uniform(0.2, 0.4))
    angle = rng.uniform(-40, 40)
    polygon = cv2.ellipse2Poly(
        (int(centre[0]), int(centre[1])),
        (int(axes[0]) + 1, int(axes[1]) + 1),
        int(angle),
        0,
        360,
        15,
    )
    size = crop.shape[0]
    if rng.random() < 0.5:
        cheek = np.clip(eyes + v * height * 0.6 + u * width * 0.45, 0, size - 1).astype(int)
        patch = crop[
            max(0, cheek[1] - 3) : cheek[1] + 4, max(0, cheek[0] - 3) : cheek[0] + 4
        ].reshape(-1, 3)
        colour = np.empty((size, size, 3), np.float32)
        colour[:] = np.median(patch, axis=0) * 1.15 if len(patch) else 180.0
    else:
        colour = _mask_texture(size, rng)
    return _blend(crop, np.asarray(polygon, np.float64), colour)


@dataclass(frozen=True)
class RealAugment:
    """Augmentation for real photos: the seed's geometry (milder, plus detector-like box jitter),
    colour, blur, noise, JPEG, low resolution, random erasing, and mask appearance: masks of the
    `mask` class recoloured, synthetic masks drawn on `no_mask` faces (worn -> `mask`, below the
    nose or on the chin -> `incorrect`); with `hard_negatives`, that share of the bare faces left
    bare get neckwear below the jaw or an object at the mouth, and stay `no_mask`."""

    synthetic_mask: float = 0.3
    recolour: float = 0.3
    hard_negatives: float = 0.0
    erase: float = 0.25
    geometry: GeometryAugment = GeometryAugment(rotation_deg=15, shift=0.08, zoom=0.12)

    def __call__(
        self,
        crop: np.ndarray,
        label: str,
        landmarks: np.ndarray,
        classes: list[str],
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, str]:
        has_landmarks = bool(np.isfinite(landmarks).all())
        if has_landmarks and label == NO_MASK and rng.random() < self.synthetic_mask:
            placement = "worn"
            if INCORRECT in classes and rng.random() < 0.4:
                placement = "below_nose" if rng.random() < 0.6 else "on_chin"
            crop = paint_mask(crop, landmarks, placement, rng)
            label = MASK if placement == "worn" else INCORRECT
        elif has_landmarks and label in (MASK, INCORRECT) and rng.random() < self.recolour:
            crop = recolour_lower_face(crop, landmarks, label, rng)
        elif (
            self.hard_negatives
            and has_landmarks
            and label == NO_MASK
            and rng.random() < self.hard_negatives
        ):
            paint = paint_neckwear if rng.random() < 0.6 else paint_mouth_object
            crop = paint(crop, landmarks, rng)
        crop = self.geometry(crop, rng)
        crop = _colour_jitter(crop, rng)
        crop = _degrade(crop, rng)
        if rng.random() < self.erase:
            crop = _random_erase(crop, rng)
        return crop, label


def augmenter(name: Augment) -> Augmenter:
    """The augmentation `train --augment NAME` uses."""
    augmenters: dict[Augment, Augmenter] = {
        Augment.SEED: keep_label(seed_augment),
        Augment.REAL: RealAugment(),
        Augment.NEGATIVES: RealAugment(hard_negatives=0.4),
        Augment.NONE: keep_label(None),
    }
    return augmenters[name]
