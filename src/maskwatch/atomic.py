"""Write-then-rename, so an interrupted run never leaves a half-written output file."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from maskwatch.errors import OutputError


def _cannot_write(dest: Path, exc: OSError) -> OutputError:
    return OutputError(f"cannot write {dest}: {exc.strerror or exc}")


class PendingFile:
    """A temporary path beside `dest` (same suffix) that becomes `dest` on `commit()` and
    disappears on `discard()`. The file is not created here, so its writer creates it with the
    usual permissions."""

    def __init__(self, dest: Path) -> None:
        self.dest = Path(dest)
        try:
            self.dest.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _cannot_write(self.dest, exc) from exc
        self.tmp = (
            self.dest.parent / f".{self.dest.stem}.{uuid.uuid4().hex[:12]}.part{self.dest.suffix}"
        )

    def commit(self) -> None:
        try:
            os.replace(self.tmp, self.dest)
        except OSError as exc:
            self.discard()
            raise _cannot_write(self.dest, exc) from exc

    def discard(self) -> None:
        self.tmp.unlink(missing_ok=True)


@contextmanager
def atomic_path(dest: Path) -> Iterator[Path]:
    """Yield a temporary path for `dest`; it replaces `dest` if the block succeeds and is
    deleted if the block raises."""
    pending = PendingFile(dest)
    try:
        yield pending.tmp
    except BaseException:
        pending.discard()
        raise
    pending.commit()


def write_bytes(dest: Path, data: bytes) -> None:
    with atomic_path(dest) as tmp:
        try:
            tmp.write_bytes(data)
        except OSError as exc:
            raise _cannot_write(dest, exc) from exc


def write_text(dest: Path, text: str) -> None:
    write_bytes(dest, text.encode("utf-8"))
