"""`maskwatch data audit`: what is in the data before anyone trains on it.

Counts per class and source, exact and near-duplicate photos within and across sources, groups,
photos where no face is found, tiny faces, and whether a proposed split leaks.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from maskwatch.defaults import CROP_MARGIN, DEFAULT_INPUT_SIZE
from maskwatch.errors import DatasetError, SourceError
from maskwatch.faces import YuNetDetector
from maskwatch.images import file_sha256
from maskwatch.labels import sort_labels
from maskwatch.train.data import Sample, load_dataset
from maskwatch.train.framing import frame_samples
from maskwatch.train.metrics import HEADLINE_MIN_FACE
from maskwatch.train.split import grouped, leakage, split_groups, split_random

log = logging.getLogger("maskwatch")


def _table(rows: dict[str, Counter[str]], columns: list[str]) -> list[str]:
    width = max([len(r) for r in rows] + [6])
    lines = [f"  {'source':<{width}}" + "".join(f"{c:>10}" for c in columns) + f"{'total':>10}"]
    for name, counts in rows.items():
        lines.append(
            f"  {name:<{width}}"
            + "".join(f"{counts.get(c, 0):>10}" for c in columns)
            + f"{sum(counts.values()):>10}"
        )
    return lines


def _pairs_by_source(pairs: list[tuple[int, int]], source_of: list[str]) -> tuple[int, int]:
    within = sum(source_of[a] == source_of[b] for a, b in pairs)
    return within, len(pairs) - within


def _photos_by_digest(photos: list[Path]) -> dict[str, list[Path]]:
    """The readable photos by the SHA-256 of their bytes; a photo that cannot be read (not a
    regular file, over the size limit for an image, a broken link) is skipped with a warning."""
    digests: dict[str, list[Path]] = {}
    for photo in photos:
        try:
            digests.setdefault(file_sha256(photo), []).append(photo)
        except SourceError as exc:
            log.warning("skipping %s", exc)
    return digests


def audit(data: list[str], test_fraction: float = 0.3, seed: int = 0) -> str:
    """The audit as text, one section per question."""
    samples: list[Sample] = [s for spec in data for s in load_dataset(spec)]
    lines: list[str] = []
    source_of_photo = {s.image: s.source for s in samples}
    digests = _photos_by_digest(sorted(source_of_photo))
    readable = {photo for group in digests.values() for photo in group}
    samples = [s for s in samples if s.image in readable]
    if not samples:
        raise DatasetError(f"no readable photo in {', '.join(data)}")

    exact = [group for group in digests.values() if len(group) > 1]
    across = sum(len({source_of_photo[p] for p in group}) > 1 for group in exact)
    lines += [
        "exact duplicates (byte-identical photos):",
        f"  {len(exact)} sets, {sum(len(g) - 1 for g in exact)} redundant copies, "
        f"{across} sets spanning more than one source",
        "",
    ]

    framed = frame_samples(samples, YuNetDetector(), DEFAULT_INPUT_SIZE, CROP_MARGIN)
    labels = [s.label for s in framed.samples]
    classes = sort_labels(set(labels))
    per_source: dict[str, Counter[str]] = {}
    for s in framed.samples:
        per_source.setdefault(s.source, Counter())[s.label] += 1
    lines = [
        "faces per class and source (after finding them with the detector):",
        *_table(per_source, classes),
        "",
        *lines,
    ]
    if len(classes) < 2:
        lines += [
            f"WARNING: only one class ({', '.join(classes)}): a classifier cannot be "
            "trained on this alone",
            "",
        ]

    tiny = framed.face_sizes < HEADLINE_MIN_FACE
    lines += [
        "faces and framing:",
        *[f"  {how}: {n}" for how, n in sorted(framed.framing.items())],
        f"  faces under {HEADLINE_MIN_FACE} px (shorter side): {int(tiny.sum())} "
        f"({100 * tiny.mean():.1f}%)",
        "",
    ]

    groups, pairs = grouped(framed)
    photo_sources = [source_of_photo[Path(p)] for p in framed.photos]
    within, across_pairs = _pairs_by_source(pairs, photo_sources)
    sizes = Counter(groups)
    lines += [
        "near-duplicate photos (difference hash, robust to re-encoding, resizing, mirroring "
        "and central crops):",
        f"  {len(pairs)} pairs: {within} within a source, {across_pairs} across sources",
        f"groups (a photo's faces, groups.csv groups, near-duplicates merged): {len(sizes)}, "
        f"largest {max(sizes.values()) if sizes else 0} faces, "
        f"{sum(n == 1 for n in sizes.values())} single faces",
        "",
    ]

    lines.append(f"proposed split ({int(test_fraction * 100)}% held out, seed {seed}):")
    for name, test in (
        ("group split", split_groups(groups, labels, test_fraction, seed)),
        ("random split", split_random(len(labels), labels, test_fraction, seed)),
    ):
        leaked, crossing = leakage(framed, groups, test, pairs)
        share = leaked / max(1, int(test.sum()))
        verdict = "LEAKS" if leaked else "clean"
        lines.append(
            f"  {name}: {verdict}: {leaked} of {int(test.sum())} held-out faces "
            f"({100 * share:.0f}%) have a near-copy, the same photo or a group-mate in "
            f"training; {crossing} near-copy pairs cross"
        )
    return "\n".join(lines)
