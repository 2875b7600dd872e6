"""Datasets: class folders, Pascal VOC or one-label folders (`PATH:LABEL`), read into face
samples with labels, sources and groups; and the face list a training run writes of its
held-out faces (test_faces.csv).

A *group* is a set of samples that come from the same photograph (all faces of one photo, all
images of one `groups.csv` group, byte-identical files); groups never straddle a split.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from maskwatch.defaults import MAX_IMAGE_PIXELS, MAX_SETTINGS_BYTES
from maskwatch.errors import DatasetError, SourceError
from maskwatch.images import file_sha256, read_file
from maskwatch.labels import canonical_label, sort_labels
from maskwatch.paths import expand_home
from maskwatch.sources import list_images

log = logging.getLogger("maskwatch")

GROUPS_FILE = "groups.csv"
GROUPS_COLUMNS = ("path", "group")
_VOC_IMAGE_DIRS = ("images", "JPEGImages", ".")


# How a sample's face is found in its photo.
LARGEST_FACE = "largest"  # class folders: one face per image, the largest the detector finds
# PATH:LABEL folders: each photo's subject, its largest clear face, has that label. Other faces
# are not taken: in RMFD they are bystanders, and only 77% of them wear a mask (issue 3 notes).
SUBJECT = "subject"
ANNOTATED = "box"  # VOC: the annotated box (matched to a detection)


@dataclass(frozen=True)
class Sample:
    """One face (or, before framing, a photo of faces) to learn from: its photo, its box there
    (None until the detector finds it), label, dataset and group."""

    image: Path
    box: tuple[int, int, int, int] | None
    label: str
    source: str
    group: str
    kind: str = ANNOTATED


def _voc_annotation_files(root: Path) -> list[Path]:
    folder = root / "annotations" if (root / "annotations").is_dir() else root / "Annotations"
    if not folder.is_dir():
        folder = root
    return sorted(folder.glob("*.xml"))


def _inside_dataset(filename: str) -> bool:
    """Whether a VOC `<filename>` names a file below the dataset's image folders: relative,
    without `..` (an annotation must not open files elsewhere on the machine)."""
    name = PurePosixPath(filename.replace("\\", "/"))
    return not name.is_absolute() and ".." not in name.parts


def _find_voc_image(root: Path, xml_path: Path, filename: str | None) -> Path | None:
    names = [filename] if filename else []
    names += [xml_path.stem + s for s in (".jpg", ".jpeg", ".png", ".JPG", ".PNG")]
    for folder in _VOC_IMAGE_DIRS:
        for name in names:
            candidate = root / folder / name
            if candidate.is_file():
                return candidate
    return None


def _voc_box(obj: ET.Element) -> tuple[int, int, int, int] | str:
    """An `<object>`'s box in pixels, or why it cannot be used."""
    box = obj.find("bndbox")
    if box is None:
        return "no <bndbox>"
    try:
        coords = [float(box.findtext(k) or "nan") for k in ("xmin", "ymin", "xmax", "ymax")]
    except ValueError:
        return "coordinates that are not numbers"
    if not all(math.isfinite(c) for c in coords):
        return "coordinates that are not finite numbers"
    if any(abs(c) > MAX_IMAGE_PIXELS for c in coords):
        return "coordinates outside any image that can be read"
    x1, y1, x2, y2 = (round(c) for c in coords)
    if x2 <= x1 or y2 <= y1:
        return "no area (xmax <= xmin or ymax <= ymin)"
    return x1, y1, x2, y2


def _read_voc_xml(xml_path: Path) -> ET.Element | None:
    """The root of an annotation file, or None (with a warning) when it cannot be read: not a
    regular file, too large, or not XML."""
    try:
        return ET.fromstring(read_file(xml_path, what="an annotation"))
    except SourceError as exc:
        log.warning("skipping %s", exc)
    except ET.ParseError as exc:
        log.warning("skipping %s: not valid XML (%s)", xml_path, exc)
    return None


def load_voc(root: Path, source: str) -> list[Sample]:
    """Faces from Pascal VOC XML files (in `annotations/` or beside the images). Boxes that
    cannot be used are skipped and counted in one warning per reason."""
    samples: list[Sample] = []
    unknown: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    for xml_path in _voc_annotation_files(root):
        tree = _read_voc_xml(xml_path)
        if tree is None:
            continue
        filename = tree.findtext("filename")
        if filename and not _inside_dataset(filename):
            log.warning("skipping %s: its <filename> %r is outside the dataset", xml_path, filename)
            continue
        image = _find_voc_image(root, xml_path, filename)
        if image is None:
            log.warning("skipping %s: its image was not found", xml_path)
            continue
        for obj in tree.iter("object"):
            name = obj.findtext("name") or ""
            label = canonical_label(name)
            if label is None:
                unknown[name] += 1
                continue
            box = _voc_box(obj)
            if isinstance(box, str):
                skipped[box] += 1
                continue
            samples.append(Sample(image, box, label, source, f"{source}:{image.stem}"))
    for name, n in unknown.items():
        log.warning("%s: ignored %d boxes of unknown class %r", source, n, name)
    for reason, n in skipped.items():
        log.warning("%s: skipped %d boxes with %s", source, n, reason)
    return samples


def _read_groups(root: Path) -> dict[str, str]:
    """`groups.csv`: each image's group by its path in the dataset. A DatasetError naming the
    file says what is wrong with it."""
    path = root / GROUPS_FILE
    if not os.path.lexists(path):
        return {}
    try:
        text = read_file(path, MAX_SETTINGS_BYTES, "a groups file").decode("utf-8")
        reader = csv.DictReader(io.StringIO(text, newline=""))
        absent = [c for c in GROUPS_COLUMNS if c not in (reader.fieldnames or [])]
        if absent:
            raise DatasetError(
                f"{path}: no {' or '.join(absent)} column; its first line must name the "
                f"columns, e.g. {','.join(GROUPS_COLUMNS)}"
            )
        groups: dict[str, str] = {}
        for row in reader:
            rel, group = row["path"], row["group"]
            if rel is None or group is None:
                raise DatasetError(f"{path}: line {reader.line_num} has too few fields")
            groups[rel] = group
        return groups
    except SourceError as exc:  # a pipe, a device, a folder, too large, unreadable
        raise DatasetError(str(exc)) from exc
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text ({exc.reason})") from exc
    except csv.Error as exc:
        raise DatasetError(f"{path}: not valid CSV ({exc})") from exc


def load_class_folders(root: Path, source: str) -> list[Sample]:
    """Images in one sub-folder per class; groups from `groups.csv` when the folder has one."""
    groups = _read_groups(root)
    samples: list[Sample] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        label = canonical_label(folder.name)
        if label is None:
            log.warning("%s: ignoring folder %s (not a known class name)", source, folder.name)
            continue
        for image in list_images(folder):
            rel = image.relative_to(root).as_posix()
            group = groups.get(rel, rel)
            samples.append(Sample(image, None, label, source, f"{source}:{group}", LARGEST_FACE))
    return samples


def load_one_label_folder(root: Path, label: str, source: str) -> list[Sample]:
    """Photos (searched recursively) whose subject has `label`, e.g. RMFD's masked people.

    Byte-identical files form one group, so copies never straddle a split. A file that cannot
    be read, or is over the size limit for an image, is skipped with a warning.
    """
    samples: list[Sample] = []
    for image in list_images(root):
        try:
            digest = file_sha256(image)[:16]
        except SourceError as exc:
            log.warning("skipping %s", exc)
            continue
        samples.append(Sample(image, None, label, source, f"{source}:{digest}", SUBJECT))
    return samples


def parse_data_spec(spec: str) -> tuple[Path, str | None]:
    """'PATH' or 'PATH:LABEL' (each photo's subject has LABEL); LABEL may be any dataset name.
    A leading ~ or ~user of PATH is expanded (SettingError when there is no such user)."""
    path, sep, name = spec.rpartition(":")
    if sep and path and canonical_label(name):
        return expand_home(path), canonical_label(name)
    return expand_home(spec), None


def load_dataset(spec: str | Path) -> list[Sample]:
    """Read a dataset: class folders, Pascal VOC, or 'PATH:LABEL' (one label for every face).
    The folder's name is the samples' source."""
    root, one_label = parse_data_spec(str(spec))
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    source = root.resolve().name
    if one_label is not None:
        samples = load_one_label_folder(root, one_label, source)
    elif _voc_annotation_files(root):
        samples = load_voc(root, source)
    elif any(p.is_dir() and canonical_label(p.name) for p in root.iterdir()):
        samples = load_class_folders(root, source)
    else:
        raise DatasetError(
            f"{root}: expected one sub-folder per class (with_mask, without_mask, ...), "
            f"Pascal VOC XML annotations, or {root}:LABEL when every face has one label"
        )
    if not samples:
        raise DatasetError(f"{root}: no labelled images found")
    return samples


def load_datasets(roots: list[str] | list[Path]) -> list[Sample]:
    """All samples of several datasets; at least two classes must be present."""
    samples = [s for root in roots for s in load_dataset(root)]
    check_classes(samples)
    return samples


def check_classes(samples: list[Sample]) -> list[str]:
    """The classes present, in canonical order; a DatasetError unless there are at least two."""
    if not samples:
        raise DatasetError("the dataset has no images")
    classes = sort_labels({s.label for s in samples})
    if len(classes) < 2:
        raise DatasetError(f"the dataset has only one class ({classes[0]}); at least two needed")
    return classes


def limit_per_class(samples: list[Sample], per_class: int | None, seed: int) -> list[Sample]:
    """At most `per_class` samples of each (source, label), chosen at random with `seed`."""
    if not per_class:
        return samples
    rng = np.random.default_rng(seed)
    by_key: dict[tuple[str, str], list[int]] = {}
    for i, s in enumerate(samples):
        by_key.setdefault((s.source, s.label), []).append(i)
    keep = sorted(int(i) for idx in by_key.values() for i in rng.permutation(idx)[:per_class])
    return [samples[i] for i in keep]


FACE_COLUMNS = ("photo", "x1", "y1", "x2", "y2", "label", "source", "group")


def faces_csv(samples: list[Sample], extra: dict[str, list[str]] | None = None) -> str:
    """Framed faces (photo, box, label, source, group) as CSV: a run's test_faces.csv, which
    `evaluate --faces` and `export --exclude-faces` read back with `read_faces_csv`. `extra`
    adds columns, one value per sample (every sample then needs its box)."""
    extra = extra or {}
    if extra and any(s.box is None for s in samples):
        raise ValueError("extra columns need a box for every sample")
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow((*FACE_COLUMNS, *extra))
    writer.writerows(
        (s.image, *s.box, s.label, s.source, s.group, *(column[i] for column in extra.values()))
        for i, s in enumerate(samples)
        if s.box is not None
    )
    return buffer.getvalue()


def read_faces_csv(path: Path) -> list[Sample]:
    """The faces of a test_faces.csv, with their boxes as written; read like any settings
    file (a pipe or a file over MAX_SETTINGS_BYTES is refused unread)."""
    what = f"cannot read the face list {path}"
    try:
        text = read_file(path, MAX_SETTINGS_BYTES, "a face list").decode("utf-8")
    except SourceError as exc:  # a pipe, a device, a folder, too large, unreadable
        raise DatasetError(f"cannot read the face list {exc}") from exc
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{what}: not UTF-8 text (byte {exc.start})") from exc
    header = next(csv.reader(io.StringIO(text, newline="")), [])
    missing = [c for c in FACE_COLUMNS if c not in header]
    if missing:
        raise DatasetError(
            f"{what}: no {', '.join(missing)} column (a run's test_faces.csv has "
            f"{','.join(FACE_COLUMNS)})"
        )
    try:
        return [
            Sample(
                Path(r["photo"]),
                (int(r["x1"]), int(r["y1"]), int(r["x2"]), int(r["y2"])),
                r["label"],
                r["source"],
                r["group"],
                ANNOTATED,
            )
            for r in csv.DictReader(io.StringIO(text, newline=""))
        ]
    except (ValueError, TypeError, csv.Error) as exc:  # a box that is no number, a short row
        raise DatasetError(f"{what}: {exc}") from exc
