"""`maskwatch demo`: the whole pipeline on the six sample photos, no camera needed: one `Watch`
whose frame output writes each annotated photo and keeps it for the contact sheet."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from maskwatch import hub
from maskwatch.atomic import make_folder, write_bytes
from maskwatch.draw import Annotator
from maskwatch.images import load_image
from maskwatch.labels import CANONICAL, UNCERTAIN
from maskwatch.pipeline import Pipeline
from maskwatch.sinks import encode_image
from maskwatch.types import Frame, FrameResult, Mode
from maskwatch.watch import Watch

SHEET_CELL = 480


@dataclass(frozen=True)
class DemoResult:
    results: list[FrameResult]
    annotated: list[Path]
    sheet: Path


def contact_sheet(
    images: list[np.ndarray], captions: list[str], cell: int = SHEET_CELL
) -> np.ndarray:
    """One page: every image scaled to `cell` px wide (at most `cell` high), three per row,
    each with its caption underneath."""
    columns = min(3, len(images))
    caption_h = 28
    tiles = [
        cv2.resize(
            im,
            None,
            fx=min(cell / im.shape[1], cell / im.shape[0]),
            fy=min(cell / im.shape[1], cell / im.shape[0]),
            interpolation=cv2.INTER_AREA,
        )
        for im in images
    ]
    rows = [tiles[i : i + columns] for i in range(0, len(tiles), columns)]
    heights = [max(t.shape[0] for t in row) + caption_h for row in rows]
    sheet = np.full((sum(heights), columns * cell, 3), 255, np.uint8)
    y0 = 0
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            x0 = c * cell + (cell - tile.shape[1]) // 2
            sheet[y0 : y0 + tile.shape[0], x0 : x0 + tile.shape[1]] = tile
            cv2.putText(
                sheet,
                captions[r * columns + c],
                (c * cell + 6, y0 + heights[r] - 9),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.5,
                (0, 0, 0),
                1,
                cv2.LINE_AA,
            )
        y0 += heights[r]
    return sheet


def _counts(result: FrameResult) -> Counter[str]:
    return Counter(result.faces.labels)


def summary_table(results: list[FrameResult]) -> str:
    """A plain-text table: one row per photo, faces found per label."""
    columns = [*CANONICAL, UNCERTAIN]
    header = f"{'photo':<40} {'faces':>5} " + " ".join(f"{c:>9}" for c in columns)
    lines = [header, "-" * len(header)]
    totals: Counter[str] = Counter()
    for result in results:
        counts = _counts(result)
        totals.update(counts)
        name = Path(result.frame.source).name
        lines.append(
            f"{name:<40} {len(result.faces):>5} "
            + " ".join(f"{counts.get(c, 0):>9}" for c in columns)
        )
    lines.append(
        f"{'total':<40} {sum(totals.values()):>5} "
        + " ".join(f"{totals.get(c, 0):>9}" for c in columns)
    )
    return "\n".join(lines)


class DemoOutput:
    """A frame output: each photo annotated into `out_dir`, kept for the contact sheet."""

    def __init__(self, out_dir: Path, annotator: Annotator) -> None:
        self.out_dir = out_dir
        self.annotator = annotator
        self.results: list[FrameResult] = []
        self.annotated: list[Path] = []
        self.tiles: list[np.ndarray] = []

    def write(self, result: FrameResult) -> None:
        annotated = self.annotator(result)
        target = self.out_dir / f"annotated_{Path(result.frame.source).name}"
        write_bytes(target, encode_image(target, annotated))
        self.results.append(result)
        self.annotated.append(target)
        self.tiles.append(annotated)

    def close(self, ok: bool = True) -> None:
        pass


def _samples() -> Iterator[Frame]:
    for index, entry in enumerate(hub.SAMPLES):
        path = hub.fetch(entry.name)
        yield Frame(
            image=load_image(path), index=index, time=0.0, source=str(path), mode=Mode.PHOTO
        )


def run_demo(pipeline: Pipeline, out_dir: Path) -> DemoResult:
    """Fetch the samples through the verifying cache, annotate each, write a contact sheet."""
    make_folder(out_dir)  # a folder that cannot be made is reported before any work
    output = DemoOutput(out_dir, Annotator())
    with Watch(pipeline) as watch:
        watch.add(output)
        watch.run(_samples())
    captions = []
    for result in output.results:
        found = ", ".join(f"{n} {label}" for label, n in sorted(_counts(result).items()))
        captions.append(f"{Path(result.frame.source).name[:8]}: {found or 'no face found'}")
    sheet_path = out_dir / "contact_sheet.jpg"
    write_bytes(sheet_path, encode_image(sheet_path, contact_sheet(output.tiles, captions)))
    return DemoResult(output.results, output.annotated, sheet_path)
