"""A leading `~` or `~user` in a path given by a person, expanded as a shell does, or refused in
one line when there is no such home; and why a path given names nothing."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from maskwatch.errors import SettingError


def expand_home(path: str | os.PathLike[str], variable: str = "") -> Path:
    """`path` with a leading ~ or ~user replaced by that home folder; SettingError when the user
    does not exist (or, for ~, when neither $HOME nor the password database gives a home). A
    path read from an environment `variable` is named by it in the error."""
    try:
        return Path(path).expanduser()
    except RuntimeError:  # pathlib's only word for a home it cannot find
        user = Path(path).parts[0][1:]
        whose = f"no user {user}" if user else "no home folder ($HOME is not set)"
        given = f"${variable}={path}" if variable else str(path)
        raise SettingError(f"{given}: {whose} to find the home of") from None


def broken_link(path: Path) -> Path | None:
    """The first of `path` and the folders above it that is a link leading nowhere (to nothing,
    or round a loop), or None: a path under it can be neither read nor written."""
    for part in (path, *path.parents):
        if os.path.islink(part) and not part.exists():
            return part
    return None


def missing(path: Path, nothing: str = "no such file or folder") -> str:
    """Why `path`, which does not exist, names nothing: `nothing`, unless it is a link (a loop
    of symbolic links, or a link to nothing, say which)."""
    if not os.path.islink(path):
        return nothing
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a loop of symbolic links"
    return f"a link to nothing ({os.readlink(path)})"
