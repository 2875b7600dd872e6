"""Write-then-rename, so an interrupted run never leaves a half-written output file."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from maskwatch.errors import OutputError


@contextmanager
def atomic_path(dest: Path) -> Iterator[Path]:
    """Yield a temporary path beside `dest` (same suffix); rename it onto `dest` on success,
    delete it if the block raises."""
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot write {dest}: {exc.strerror or exc}") from exc
    # Not created here, so the writer creates it with the usual permissions.
    tmp = dest.parent / f".{dest.stem}.{uuid.uuid4().hex[:12]}.part{dest.suffix}"
    try:
        yield tmp
        try:
            os.replace(tmp, dest)
        except OSError as exc:
            raise OutputError(f"cannot write {dest}: {exc.strerror or exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(dest: Path, data: bytes) -> None:
    with atomic_path(dest) as tmp:
        try:
            tmp.write_bytes(data)
        except OSError as exc:
            raise OutputError(f"cannot write {dest}: {exc.strerror or exc}") from exc


def write_text(dest: Path, text: str) -> None:
    write_bytes(dest, text.encode("utf-8"))
