"""Credentials kept out of what maskwatch shows: URLs of cameras, brokers and databases may
carry a user:password or a secret query option."""

from __future__ import annotations

import re

_PASSWORD = re.compile(
    r"(?<=://)([^/?#\s:@]*):[^/?#\s]*@"
)  # to the last @: a password may hold one
_SECRET_QUERY = re.compile(
    r"(?i)(?<=[?&;])([^=&#\s]*(?:pass|pwd|secret|token|key|auth)[^=&#\s]*=)[^&#\s]*"
)


def without_password(text: str) -> str:
    """`text` without the password of any URL in it (rtsp://user:pw@host/ ->
    rtsp://user:***@host/): what the command line prints, where `serve`'s own ?token= must
    stay."""
    return _PASSWORD.sub(r"\1:***@", text)


def redact(text: str) -> str:
    """`text` without the password of any URL in it nor the values of query options named
    like secrets (?pwd=..., ?token=... -> ?pwd=***), for names and errors shown where the URL's
    credentials must not be."""
    return _SECRET_QUERY.sub(r"\1***", without_password(text))
