"""Credentials kept out of what maskwatch shows: URLs of cameras, brokers and databases may
carry a user:password or a secret query or fragment option (`?sig=`, `#access_token=`)."""

from __future__ import annotations

import re

_PASSWORD = re.compile(
    r"(?<=://)([^/?#\s:@]*):\S*@"
)  # to the last @: a password may hold one, or a # / ? that was not percent-encoded
_SECRET_QUERY = re.compile(
    r"(?i)(?<=[?&;#])([^=&#\s]*(?:pass|pwd|secret|token|key|auth|sig|cred)[^=&#\s]*=)[^&#\s]*"
)


# A log record's extra: a message that hands the user their own link (serve's, with its token)
OWN_SECRET = "shows_own_secret"


URL_HINT = (
    "not a URL that can be read: its port missing, out of range (1-65535) or not a number, or "
    "a bracket of an IPv6 address unclosed; a # / ? or @ in a user name or password must be "
    "percent-encoded (%23 %2F %3F %40)"
)


def redact(text: str) -> str:
    """`text` without the password of any URL in it nor the values of query options named
    like secrets (rtsp://user:pw@host/?pwd=x -> rtsp://user:***@host/?pwd=***): for every
    message, name and error maskwatch shows (but `serve`'s own link, with the user's token)."""
    return _SECRET_QUERY.sub(r"\1***", _PASSWORD.sub(r"\1:***@", text))
