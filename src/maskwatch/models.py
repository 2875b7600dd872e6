"""`maskwatch models`: every file maskwatch knows, where it is, and whether it verifies."""

from __future__ import annotations

from maskwatch import hub, yunet
from maskwatch.classifier import (
    BUNDLED_MODELS,
    bundled_model_path,
    default_model_path,
    load_metadata,
)
from maskwatch.errors import MaskwatchError


def _status(path_ok: bool, exists: bool) -> str:
    if path_ok:
        return "ok"
    return "CORRUPT (sha256 mismatch)" if exists else "not downloaded"


def _any_size_row(fetch: bool) -> tuple[tuple[str, str, str, str], bool]:
    """The row of YuNet's free-size copy (yunet.py) and whether it verifies: it must be what the
    verified original converts to. With `fetch` a missing or wrong copy is made again."""
    original = hub.cache_dir() / hub.YUNET.filename
    copy = yunet.any_size_path(original, hub.YUNET.sha256)
    row = (f"{hub.YUNET.name}-{yunet.DERIVED}", f"{hub.YUNET.kind} (derived)")
    if not hub.is_verified(original, hub.YUNET):
        return (*row, f"waits for a verified {hub.YUNET.name}", str(copy)), not fetch
    if fetch and not yunet.is_any_size_copy(copy, original):
        try:
            yunet.make_any_size_copy(original)
        except MaskwatchError as exc:
            return (*row, f"FAILED: {exc}", str(copy)), False
    if yunet.is_any_size_copy(copy, original):
        size = copy.stat().st_size
        return (
            *row,
            f"ok ({size / 1024:.0f} KB, from the verified {hub.YUNET.name})",
            str(copy),
        ), True
    if copy.is_dir():
        return (*row, "CORRUPT (a folder is in its place, left alone)", str(copy)), False
    if copy.is_symlink() or copy.exists():  # a loop of links does not exist
        what = "not a file" if copy.exists() and not copy.is_file() else "not the conversion"
        return (*row, f"CORRUPT ({what} of the verified {hub.YUNET.name})", str(copy)), False
    if copy.parent.exists() and not copy.parent.is_dir():
        return (*row, f"CORRUPT ({copy.parent} is not a folder)", str(copy)), False
    return (*row, "not made yet (made on first use)", str(copy)), not fetch


def model_table(fetch: bool = False) -> tuple[str, bool]:
    """A text table of every registry file and the bundled classifier; True if all verify.

    With `fetch`, missing or corrupt files are downloaded first.
    """
    rows: list[tuple[str, str, str, str]] = []
    all_ok = True
    for entry in hub.REGISTRY.values():
        path = hub.cache_dir() / entry.filename
        if fetch and not hub.is_verified(path, entry):
            try:
                hub.fetch(entry.name)
            except MaskwatchError as exc:
                rows.append((entry.name, entry.kind, f"FAILED: {exc}", str(path)))
                all_ok = False
                continue
        ok = hub.is_verified(path, entry)
        all_ok &= ok or not fetch
        rows.append((entry.name, entry.kind, _status(ok, path.exists()), str(path)))
        if entry is hub.YUNET:
            derived, ok = _any_size_row(fetch)
            rows.append(derived)
            all_ok &= ok
    default = default_model_path()
    for name in BUNDLED_MODELS:
        bundled = bundled_model_path(name)
        try:
            expected = load_metadata(bundled).sha256
            ok = bundled.is_file() and hub.sha256_of(bundled) == expected
        except MaskwatchError:
            ok = False
        all_ok &= ok
        kind = "classifier (bundled" + (", default)" if bundled == default else ")")
        rows.append((bundled.stem, kind, _status(ok, bundled.exists()), str(bundled)))
    widths = [max(len(r[i]) for r in [*rows, ("name", "kind", "status", "path")]) for i in range(3)]
    lines = [f"{'name':<{widths[0]}}  {'kind':<{widths[1]}}  {'status':<{widths[2]}}  path"]
    lines += [f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:<{widths[2]}}  {d}" for a, b, c, d in rows]
    return "\n".join(lines), all_ok
