"""Who may reach what maskwatch serves over HTTP (`serve`, `detect --metrics-port`): anyone on
loopback; off loopback only with a token, unless --no-auth says so on purpose. Light enough for
`detect`, which has no web extra."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from urllib.parse import quote

from maskwatch.defaults import LOOPBACK_HOST
from maskwatch.errors import SettingError

LOOPBACK = (LOOPBACK_HOST, "localhost", "::1")
ANY_HOST = "*"
TOKEN_ENV = "MASKWATCH_TOKEN"


def server_token(
    host: str, token: str | None, no_auth: bool = False, option: str = "--host"
) -> str | None:
    """The token clients must give: `token`, else $MASKWATCH_TOKEN; none with `no_auth`. A
    server reachable from the network without one is refused unless `no_auth` says so
    (`option` names the address's option in the message)."""
    where = "--token" if token else f"${TOKEN_ENV}"
    token = token or os.environ.get(TOKEN_ENV) or None
    if token is not None and (not token.strip() or token != token.strip()):
        raise SettingError(
            f"{where}: a token must not be blank nor begin or end with a space "
            "(a client's copy would not match)"
        )
    if no_auth:
        return None
    if token is None and host not in LOOPBACK:
        raise SettingError(
            f"{option} {host} opens the server to the network: give --token TOKEN (or set "
            f"{TOKEN_ENV}), or --no-auth to serve without one"
        )
    return token


def host_names(host: str, allowed: Sequence[str] = ()) -> list[str]:
    """The names a server listening on `host` answers to in a request's Host header: on
    loopback, where no token is needed, loopback's own and the `allowed` ones (--allow-host: a
    reverse proxy's), so that a page of another site whose name was made to point at 127.0.0.1
    (DNS rebinding) is refused; elsewhere any (the token decides, unless --no-auth was given on
    purpose)."""
    if host not in LOOPBACK:
        return [ANY_HOST]
    return [f"[{name}]" if ":" in name else name for name in LOOPBACK] + list(allowed)


_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"  # one part of a name (RFC 1123)
HOST_NAME = re.compile(rf"(?=.{{1,253}}$)(\*\.)?{_LABEL}(\.{_LABEL})*")


def host_is_allowed(name: str | None, allowed: Sequence[str]) -> bool:
    """Whether host `name` is one of `allowed` (--allow-host names; `*.x` is any subdomain of x)."""
    if not name:
        return False
    name = name.lower()
    return any(
        name.endswith(pattern[1:]) if pattern.startswith("*.") else name == pattern
        for pattern in allowed
    )


def address(scheme: str, host: str, port: int, path: str = "/", token: str | None = None) -> str:
    """The URL a client opens: an IPv6 host in brackets, the token percent-encoded."""
    shown = f"[{host}]" if ":" in host else host
    query = f"?token={quote(token, safe='')}" if token else ""
    return f"{scheme}://{shown}:{port}{path}{query}"
