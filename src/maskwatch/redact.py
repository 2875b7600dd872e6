"""Credentials kept out of what maskwatch shows: URLs of cameras, brokers and databases may
carry a user:password or a secret query or fragment option (`?sig=`, `#access_token=`)."""

from __future__ import annotations

import re

_PASSWORD = re.compile(
    r"(?<=://)([^/?#\s:@]*):[^/?#\s]*@"
)  # to the last @: a password may hold one
_SECRET_QUERY = re.compile(
    r"(?i)(?<=[?&;#])([^=&#\s]*(?:pass|pwd|secret|token|key|auth|sig|cred)[^=&#\s]*=)[^&#\s]*"
)


# A log record's extra: a message that hands the user their own link (serve's, with its token)
OWN_SECRET = "shows_own_secret"


def redact(text: str) -> str:
    """`text` without the password of any URL in it nor the values of query options named
    like secrets (rtsp://user:pw@host/?pwd=x -> rtsp://user:***@host/?pwd=***): for every
    message, name and error maskwatch shows (but `serve`'s own link, with the user's token)."""
    return _SECRET_QUERY.sub(r"\1***", _PASSWORD.sub(r"\1:***@", text))
